"""Evaluation of an archive run on actor pools, into one METRICS_DIR.

A Ray Data pipeline over one row per video (original + its processed outputs):

1. :class:`PoseStage` — actor pool (``ray.eval_concurrency`` actors, ``ray.num_gpus_pose``
   GPUs each), the pose model built once per actor: keypoints of every frame of the
   original and of each output (:func:`deid.evaluate.extract.extract_keypoints`);
2. :class:`IdentityStage` — actor pool with the identity encoder, the attacker's face
   detector and the locator built once per actor: faces and embeddings of the
   original (with the null control) and of each output at the original's face places
   (:func:`deid.evaluate.extract.extract_faces`), the reference embeddings, then the
   cheap scoring (:func:`deid.evaluate.score.score_method`) and the writes of that
   video's partitions (keypoints/, identity/, perframe/ by video and method) and its
   run.json entry (:mod:`deid.evaluate.store`);
3. the driver runs :func:`deid.evaluate.aggregate` (summary.parquet, status.parquet,
   per_keypoint.parquet, clinical.parquet, run.json) — any time, also on a partial run.

The pose arrays of a video go from stage 1 to stage 2 as a file in the run's private
work folder, not through the object store. A video whose evaluation fails gets no
entry (and an error line); the others go on.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


class _NoPose:
    """Stands in for the pose model in the identity actors (they never run it)."""

    name = "none"

    def reset(self) -> None:
        pass


def _frames(original: str, processed: dict[str, str], max_frames: int) -> tuple[int, dict[str, str]]:
    """Frames to evaluate, and the outputs refused ({method: why}), as
    :func:`deid.evaluate.api.comparable_outputs` decides for ``deid evaluate``."""
    from deid.evaluate.api import comparable_outputs

    _, _, n, refused = comparable_outputs(original, processed, max_frames)
    return n, refused


class PoseStage:
    """Stage 1 (see the module doc)."""

    def __init__(self, cfg_dict: dict):
        from deid.config import from_dict
        from deid.evaluate.models import build_pose_estimator, pose_info

        self.cfg = from_dict(cfg_dict)
        pc = self.cfg.evaluate.pose
        self.estimator = build_pose_estimator(pc)
        self.info = pose_info(pc.backend, self.estimator)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from deid.evaluate.extract import extract_keypoints

        out: dict[str, list] = {k: [] for k in ("video", "job", "kp_file", "error")}
        for vid, job_json in zip(batch["video"], batch["job"]):
            job = json.loads(job_json)
            err, path = "", ""
            try:
                n, refused = _frames(job["original"], job["processed"], self.cfg.evaluate.max_frames)
                kw = dict(stop=n, chunk_size=self.cfg.io.chunk_size, decoder=self.cfg.io.decoder, batch_mb=self.cfg.io.batch_mb)
                kps = {"original": extract_keypoints(job["original"], self.estimator, **kw)}
                for m, p in job["processed"].items():
                    if m not in refused:
                        kps[m] = extract_keypoints(p, self.estimator, **kw)
                path = str(Path(job["work"]) / f"{vid}.keypoints.pkl")
                Path(job["work"]).mkdir(parents=True, exist_ok=True)
                tmp = path + ".part"
                with open(tmp, "wb") as fh:
                    pickle.dump({"frames": n, "keypoints": kps, "pose": self.info, "refused": refused}, fh,
                                protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, path)
            except Exception as e:  # noqa: BLE001 - per-video errors are data
                err = f"{vid}: pose extraction failed: {type(e).__name__}: {e}"
            out["video"].append(str(vid))
            out["job"].append(job_json)
            out["kp_file"].append(path)
            out["error"].append(err)
        return out


class IdentityStage:
    """Stage 2 (see the module doc)."""

    def __init__(self, cfg_dict: dict, metrics_dir: str):
        from deid.config import from_dict
        from deid.evaluate.models import EvalModels

        self.cfg = from_dict(cfg_dict)
        self.models = EvalModels.build(self.cfg, estimator=_NoPose())
        self.metrics_dir = metrics_dir

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"video": [], "error": []}
        for vid, job_json, kp_file, err in zip(batch["video"], batch["job"], batch["kp_file"], batch["error"]):
            if not err:
                try:
                    self.evaluate(str(vid), json.loads(job_json), str(kp_file))
                except Exception as e:  # noqa: BLE001 - per-video errors are data
                    err = f"{vid}: evaluation failed: {type(e).__name__}: {e}"
            if kp_file:
                Path(str(kp_file)).unlink(missing_ok=True)
            out["video"].append(str(vid))
            out["error"].append(err)
        return out

    def evaluate(self, vid: str, job: dict, kp_file: str) -> None:
        import datetime as dt

        from deid import __version__
        from deid.errors import DeidError
        from deid.evaluate.extract import extract_faces
        from deid.evaluate.references import build_references, default_distractors, default_target
        from deid.evaluate.score import score_method
        from deid.evaluate.store import clear_method_scores, write_method_scores, write_status_from_audits, write_video_entry
        from deid.identity import effective_threshold
        from deid.io import probe

        cfg, mdl, ev = self.cfg, self.models, self.cfg.evaluate
        with open(kp_file, "rb") as fh:
            data = pickle.load(fh)  # written by stage 1 of this run, in the private work folder
        n, kps, pose = data["frames"], data["keypoints"], data["pose"]
        refused = dict(data.get("refused") or {})
        original = job["original"]
        processed = {m: p for m, p in job["processed"].items() if m not in refused}
        info_o = probe(original)
        kw = dict(every=ev.identity_every, stop=n, chunk_size=cfg.io.chunk_size, decoder=cfg.io.decoder, batch_mb=cfg.io.batch_mb)
        ofaces = extract_faces(original, mdl.encoder, mdl.detector, locator=mdl.locator, null_control=True, **kw)
        thr = effective_threshold(mdl.encoder, ev.identity.threshold)
        dlist = [(lab, str(p)) for lab, p in default_distractors(original)] if ev.default_distractors else []
        refs = build_references(
            encoder=mdl.encoder, detector=mdl.detector, distance=mdl.encoder.distance, threshold=thr, original_faces=ofaces,
            target=default_target(cfg, job.get("donor") or None) if "swap" in processed else None, distractors=dlist,
            gallery_size=ev.gallery_size, sample_frames=ev.sample_frames, margin=cfg.audit.null_margin,
        )
        score_kw = dict(fps=info_o.fps, distance=mdl.encoder.distance, threshold=thr, null_margin=cfg.audit.null_margin,
                        min_face_px=cfg.audit.min_face_px,
                        vis_threshold=ev.pose.min_score, pose_backend=pose["name"], identity_backend=mdl.identity["name"],
                        deid_version=__version__)
        root = Path(self.metrics_dir)
        write_method_scores(root, score_method(vid, "original", kps["original"], kps["original"], ofaces, ofaces.as_processed(), refs, **score_kw))
        errors = dict(refused)
        for m in refused:
            clear_method_scores(root, vid, m)  # no earlier evaluation's numbers stand in for a refused output
        for m, p in processed.items():
            try:
                pfaces = extract_faces(p, mdl.encoder, mdl.detector, at=ofaces, **kw)
                write_method_scores(root, score_method(vid, m, kps["original"], kps[m], ofaces, pfaces, refs, **score_kw))
            except DeidError as e:
                errors[m] = str(e)
                clear_method_scores(root, vid, m)  # no earlier evaluation's numbers stand in for this one
        # every output asked for (a refused one is listed with its error): a rerun finds the entry current
        audits = write_status_from_audits(root, vid, job["processed"])
        write_video_entry(root, {
            "video": vid, "original": original, "processed": job["processed"],
            "fps": info_o.fps, "width": info_o.width, "height": info_o.height, "frame_count": info_o.frame_count,
            "frames_evaluated": n, "audit": audits, "references": refs.describe(), "errors": errors,
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "run": {"config": cfg.to_dict(), "pose_backend": pose, "identity_backend": mdl.identity},
        })


def _scoring_settings(cfg_dict: dict) -> dict:
    """The settings an evaluation's numbers depend on: the evaluate section, and the
    leak rule's margin and smallest face (deid.evaluate.api's scoring)."""
    audit = cfg_dict.get("audit") or {}
    return {"evaluate": cfg_dict.get("evaluate"), "null_margin": audit.get("null_margin"), "min_face_px": audit.get("min_face_px")}


def _needs_evaluation(metrics_dir: Path, vid: str, outputs: dict[str, str], cfg: Any = None) -> bool:
    """No run.json entry for the video yet, an output newer than its entry, or (with
    ``cfg``) evaluation settings other than the entry's."""
    from deid.evaluate.store import video_entry_path

    entry = video_entry_path(metrics_dir, vid)
    if not entry.is_file():
        return True
    try:
        data = json.loads(entry.read_text())
        old = data.get("processed") or {}
        old_cfg = (data.get("run") or {}).get("config") or {}
    except (OSError, ValueError, AttributeError):
        return True
    if old != outputs:
        return True
    if cfg is not None and _scoring_settings(old_cfg) != _scoring_settings(json.loads(json.dumps(cfg.to_dict()))):
        return True
    t = entry.stat().st_mtime
    return any(Path(p).stat().st_mtime > t for p in outputs.values())


def collect_evaluations(rows: Any, total: int, echo: Callable[[str], None], failures: dict[str, str] | None = None) -> int:
    """Take the evaluation's result rows as they come: one line per video (``evaluated i
    of N``, or its error), so a long evaluation is seen going; the failed ones go into
    ``failures``. Returns the number of videos evaluated without error."""
    t0 = time.monotonic()
    ok = 0
    for i, row in enumerate(rows, 1):
        vid, err = str(row["video"]), str(row["error"] or "")
        el = time.monotonic() - t0
        if err:
            echo(f"archive: evaluation of {vid} failed ({i} of {total}, {el:.0f} s): {err}")
            if failures is not None:
                failures[vid] = err
        else:
            ok += 1
            echo(f"archive: evaluated {vid} ({i} of {total}, {el:.0f} s)")
    return ok


def evaluate_archive(run: Any, cfg: Any, *, echo: Callable[[str], None] = print, failures: dict[str, str] | None = None) -> Path:
    """Evaluate every published output of the archive (see the module doc) and
    aggregate; returns METRICS_DIR. Videos evaluated before, whose outputs have not
    changed since, are not evaluated again. ``failures`` (when given) receives
    ``{video: error}`` for each video whose evaluation failed: the job's exit code
    says so (the other videos are still evaluated and aggregated)."""
    import ray
    import ray.data

    from deid.archive import DONE_STATES, evaluation_order, private_mkdir
    from deid.evaluate import aggregate

    from .cluster import configure_data

    configure_data()
    metrics = Path(cfg.ray.metrics_dir).expanduser().resolve() if cfg.ray.metrics_dir else run.records_dir / "metrics"
    metrics.mkdir(parents=True, exist_ok=True)
    work = private_mkdir(run.work_root / "eval")
    jobs: dict[str, dict] = {}
    work_of: dict[str, tuple[int, int]] = {}  # video -> (frames, outputs), for the order
    for e in run.manifest.entries:
        outs = {}
        frames = 0
        for m in e.methods:
            r = run.status.get(e.video_id, m)
            if not r or not r.get("output_path"):
                continue
            p = Path(r["output_path"])  # as published (pseudonymous names come from the input's bytes)
            if r.get("state") in DONE_STATES and p.is_file():
                outs[m] = str(p)
                frames = max(frames, int(r.get("frames_written") or 0))
        if outs and _needs_evaluation(metrics, e.video_id, outs, cfg):
            # the row's donor (an archive names one per row), not the config's: the swap's
            # target distances, and the donor left out of the attack's gallery
            job = {"original": e.video, "processed": outs, "work": str(work), "donor": e.donor or cfg.swap.donor}
            jobs[e.video_id] = {"video": e.video_id, "job": json.dumps(job)}
            cap = cfg.evaluate.max_frames
            work_of[e.video_id] = (min(frames, cap) if cap > 0 else frames, len(outs))
    if jobs:
        echo(f"archive: evaluating {len(jobs)} video(s) into {metrics}")
        size = max(1, min(cfg.ray.eval_concurrency, len(jobs)))
        # one video in flight per actor: a job runs for minutes, so a second one queued
        # behind a busy actor would only wait there while another actor idles
        pool = dict(size=size, max_tasks_in_flight_per_actor=1)
        # the longest first (deid.archive.evaluation_order): one video per block, handed out in order
        ds = ray.data.from_items([jobs[v] for v in evaluation_order(work_of)], override_num_blocks=len(jobs))
        ds = ds.map_batches(PoseStage, fn_constructor_kwargs={"cfg_dict": cfg.to_dict()}, batch_size=1,
                            compute=ray.data.ActorPoolStrategy(**pool), num_gpus=cfg.ray.num_gpus_pose or None)
        ds = ds.map_batches(IdentityStage, fn_constructor_kwargs={"cfg_dict": cfg.to_dict(), "metrics_dir": str(metrics)},
                            batch_size=1, compute=ray.data.ActorPoolStrategy(**pool))
        collect_evaluations(ds.iter_rows(), len(jobs), echo, failures)
    for d in (work, run.work_root):
        try:
            d.rmdir()  # only when empty
        except OSError:
            pass
    # the manifest's failed videos and outputs, which have no audit record to report them
    from deid.evaluate.store import write_failures

    for vid in [e.video_id for e in run.manifest.entries] + [err.video_id for err in run.manifest.errors]:
        write_failures(metrics, vid, [r for (v, _m), r in run.status.rows.items() if v == vid])
    aggregate(metrics)
    return metrics
