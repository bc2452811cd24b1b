"""One measurement in its own process: ``python -m bench.child TASK '<json spec>'``.

The parent (:mod:`bench.run`) starts a fresh interpreter per measurement so each one's
peak RSS (``ru_maxrss``) is its own and no run is helped by another's warm caches.
Models are built *before* the timer starts (that is start-up, paid once per worker in
an archive run); the timed block is the work a user waits for per video. The answer is
one ``BENCH_RESULT {json}`` line on stdout (see :func:`bench.common.emit`) with
``seconds`` (wall), ``cpu_seconds`` (all threads, plus waited-for subprocesses),
``peak_rss_mb`` (the whole process, model building included) and task facts.

Tasks: ``bare``, ``decode``, ``deid``, ``recall``, ``swap_train``, ``swap_convert``,
``pose``, ``identity``, ``evaluate``, ``archive``, ``ray_archive``, ``ray_startup``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from .common import Meter, bare_transcode, emit


def _cfg(over: list[str] | None = None, config: str | None = None) -> Any:
    from deid.config import Config, load_config

    return (load_config(config) if config else Config()).replace(*(over or []))


def task_bare(s: dict[str, Any]) -> dict[str, Any]:
    from deid.io import probe

    cfg = _cfg(s.get("set"), s.get("config"))
    with Meter() as m:
        n = bare_transcode(Path(s["src"]), Path(s["dst"]), cfg)
    return {**m.as_dict(), "frames": n, "frames_out": probe(s["dst"]).frame_count}


def task_decode(s: dict[str, Any]) -> dict[str, Any]:
    """Decode only (the pipeline's reader: PyAV, upright RGB, a reader thread)."""
    from deid.io import VideoReader, probe
    from deid.io.prefetch import prefetch

    cfg = _cfg(s.get("set"), s.get("config"))
    info = probe(s["src"])
    n = 0
    with Meter() as m:
        for b in prefetch(VideoReader(s["src"], info=info, chunk_size=cfg.io.chunk_size, decoder=cfg.io.decoder)):
            n += len(b.frames)
    return {**m.as_dict(), "frames": n}


def _plans_json(plans: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "index": int(p.index),
            "decision": p.decision.value,
            "boxes": [[round(float(v), 2) for v in f.box] for f in p.faces],
            "sources": [f.source.value for f in p.faces],
        }
        for p in plans
    ]


def task_deid(s: dict[str, Any]) -> dict[str, Any]:
    """``process_video`` end to end (decode, detect/track, anonymize, encode, verify,
    leak audit when on, audit record) for ``methods`` on ``src``."""
    from deid.io import probe
    from deid.pipeline import Components, process_video

    import deid.audit

    cfg = _cfg(s.get("set"), s.get("config"))
    methods = list(s["methods"])
    comp = Components.build(cfg, methods)
    Path(s["out"]).mkdir(parents=True, exist_ok=True)
    # the leak audit runs after the stream has finished (reader and writer threads done),
    # so the process's CPU time across its calls is the audit's own
    audit_cpu = [0.0]
    real_audit = deid.audit.leak_audit

    def metered_audit(*a: Any, **k: Any) -> Any:
        with Meter() as ma:
            rep = real_audit(*a, **k)
        audit_cpu[0] += ma.cpu
        return rep

    deid.audit.leak_audit = metered_audit
    with Meter() as m:
        r = process_video(s["src"], s["out"], methods, cfg, components=comp, overwrite=True, keep_plans=bool(s.get("plans_out")))
    deid.audit.leak_audit = real_audit
    out: dict[str, Any] = {**m.as_dict(), "status": r.status, "error": r.error, "frames": r.frames_read,
                           "timings": r.timings, "counts": r.counts, "audit_cpu_seconds": round(audit_cpu[0], 3)}
    out["outputs"] = {o.method: {"path": o.path, "frames_written": o.frames_written,
                                 "frames_out": probe(o.path).frame_count if Path(o.path).is_file() else None,
                                 "leaks": (o.leak or {}).get("leaks"), "checked_frames": (o.leak or {}).get("checked_frames")}
                      for o in r.outputs}
    if s.get("plans_out") and r.plans is not None:
        Path(s["plans_out"]).write_text(json.dumps(_plans_json(r.plans)))
    return out


def _frames_table(path: str) -> list[dict[str, Any]]:
    """Regions per frame from a ``<stem>.<method>.frames.parquet`` the pipeline wrote."""
    import pyarrow.parquet as pq

    t = pq.read_table(path).to_pydict()
    rows = sorted(zip(t["frame"], t["decision"], t["boxes"]), key=lambda r: r[0])
    return [{"index": int(i), "decision": d, "boxes": [[round(float(v), 2) for v in b] for b in (bx or [])]} for i, d, bx in rows]


def task_recall(s: dict[str, Any]) -> dict[str, Any]:
    """For each clip: the raw face detector (``detect.backend``, no tracking) on every
    frame, and the pipeline's final regions (``process_video(..., keep_plans=True)``;
    the parent turns the leak audit off: it does not change the regions, and it would
    refuse an output it flags); the decoded frames go to an .npy
    file so deface's detector runs on exactly the same pixels. ``regions_only``: the
    pipeline's regions alone (another configuration against detections already made)."""
    import numpy as np

    from deid.detect import build_detector
    from deid.io import VideoReader, probe
    from deid.pipeline import Components, process_video

    cfg = _cfg(s.get("set"), s.get("config"))
    det = build_detector(cfg)
    comp = Components.build(cfg, ["blur"], detector=det)
    out = Path(s["out"])
    out.mkdir(parents=True, exist_ok=True)
    facts = {}
    for c in s["clips"]:
        name, src = c["name"], c["src"]
        info = probe(src)
        if hasattr(det, "reset"):
            det.reset()  # sparse detectors count frames per video
        boxes: list[list[list[float]]] = []
        frames: list[Any] = []
        with Meter() as m:
            if not s.get("regions_only"):
                for b in VideoReader(src, info=info, chunk_size=cfg.io.chunk_size):
                    for d in det.detect(b.frames):
                        boxes.append([[round(float(v), 2) for v in bx] + [round(float(sc), 3)] for bx, sc in zip(d.boxes, d.scores)])
                    frames.extend(b.frames)
                np.save(out / f"{name}.frames.npy", np.stack(frames))
                (out / f"{name}.deid_detector.json").write_text(json.dumps(boxes))
        with Meter() as mp:
            if c.get("frames_table"):  # the pipeline's own record of a run already made (same config)
                regions = _frames_table(c["frames_table"])
                counts: dict[str, Any] = {"from": "frames table"}
            else:
                r = process_video(src, out / "videos", ["blur"], cfg, components=comp, overwrite=True, keep_plans=True, name=name)
                if r.status not in ("done", "partial") or r.plans is None:
                    facts[name] = {"ok": False, "error": r.error}
                    continue
                regions, counts = _plans_json(r.plans), r.counts
        (out / f"{name}.deid_regions.json").write_text(json.dumps(regions))
        facts[name] = {"ok": True, "frames": len(regions), "width": info.width, "height": info.height, "rotation": info.rotation,
                       "detector_seconds": round(m.seconds, 3), "pipeline_seconds": round(mp.seconds, 3), "counts": counts}
    return {"clips": facts, "detector": cfg.detect.backend, "anonymize_shape": cfg.anonymize.blur.shape}


def task_swap_train(s: dict[str, Any]) -> dict[str, Any]:
    """Per-patient training through the swap module's public entry point
    (:func:`deid.swap.session.train_patient_model`: consent check, the patient's face set,
    the donor's cached face set, training for ``swap.max_minutes``) into ``work`` (a
    private 0700 directory the parent deletes), kept for ``swap_convert``. The per-donor
    one-off pre-training is not part of a patient's cost: the parent sets
    ``swap.donor_pretrain_minutes=0`` (a cached pre-trained model is still used)."""
    from deid.registry import IDENTITY_ENCODERS
    from deid.swap.session import train_patient_model

    cfg = _cfg(s.get("set"), s.get("config"))
    identity = IDENTITY_ENCODERS.create(cfg.audit.identity_backend)
    with Meter() as m:
        info = train_patient_model([s["patient"]], cfg, s["work"], identity=identity, device=s.get("device"))
    share = m.cpu / max(m.seconds, 1e-9)  # average cores busy over the whole call
    steps, secs = int(info["train_steps"]), float(info["train_seconds"])
    return {
        **m.as_dict(),
        "device": info.get("train_device"),
        "preset": info.get("preset"),
        "size": info.get("size"),
        "steps": steps,
        "train_seconds": secs,
        "steps_per_s": round(steps / max(secs, 1e-9), 4),
        "init_from_donor_pretrain": info.get("init_from_donor_pretrain"),
        "extract_seconds": info.get("extract_seconds"),
        "extract_cpu_seconds_est": round(float(info.get("extract_seconds") or 0) * share, 2),
        "patient_faces": info.get("patient_faces"),
        "donor_faces": info.get("donor_faces"),
        "max_frames": cfg.swap.max_frames,
    }


def task_swap_convert(s: dict[str, Any]) -> dict[str, Any]:
    """Swap conversion (``SwapAnonymizer.apply``: landmarks, alignment, the model,
    colour match, blending, identity gate) on the first ``frames`` frames of ``src`` with
    face regions from the pipeline's detector computed beforehand (not timed)."""
    from deid.anonymize.swap import SwapAnonymizer
    from deid.io import read_frames
    from deid.registry import IDENTITY_ENCODERS
    from deid.swap.bench import detector_regions

    cfg = _cfg(s.get("set"), s.get("config"))
    frames = read_frames(s["src"], list(range(int(s["frames"]))))
    regions = detector_regions(frames, cfg)
    identity = IDENTITY_ENCODERS.create(cfg.audit.identity_backend) if cfg.swap.gate else None
    anon = SwapAnonymizer.from_dir(s["model_dir"], cfg, identity=identity, device=s.get("device"))
    anon.apply(frames[0], regions[0])  # warm-up (first call builds lazy state)
    anon.reset()
    with Meter() as m:
        for f, r in zip(frames, regions):
            anon.apply(f, r)
    st = anon.stats()
    return {**m.as_dict(), "frames": len(frames), "gate": cfg.swap.gate, "gate_every": cfg.swap.gate_every,
            "stats": {k: st.get(k) for k in ("faces", "faces_swapped", "gate_checks", "gate_failures", "faces_masked_swap_failed")}}


def task_pose(s: dict[str, Any]) -> dict[str, Any]:
    """The evaluation's pose estimator (``evaluate.pose.backend``) in video mode."""
    from deid.io import read_frames
    from deid.registry import POSE_ESTIMATORS

    cfg = _cfg(s.get("set"), s.get("config"))
    frames = read_frames(s["src"], list(range(int(s["frames"]))))
    est = POSE_ESTIMATORS.create(cfg.evaluate.pose.backend)
    est.estimate(frames[:2])
    est.reset()
    found = 0
    with Meter() as m:
        for i in range(0, len(frames), 8):
            found += sum(k.num_persons > 0 for k in est.estimate(frames[i : i + 8]))
    getattr(est, "close", lambda: None)()
    return {**m.as_dict(), "frames": len(frames), "backend": cfg.evaluate.pose.backend, "frames_with_person": int(found)}


def task_identity(s: dict[str, Any]) -> dict[str, Any]:
    """The identity encoder (``evaluate.identity.backend``: landmarks + alignment +
    network) on one known face box per frame (found once, not timed)."""
    from deid.identity.reference import find_faces
    from deid.io import read_frames
    from deid.registry import IDENTITY_ENCODERS

    cfg = _cfg(s.get("set"), s.get("config"))
    frames = read_frames(s["src"], list(range(int(s["frames"]))))
    boxes = find_faces(frames[:1])[0]
    if len(boxes) == 0:
        return {"ok": False, "error": f"{s['src']}: no face in frame 0"}
    box = boxes[:1]
    rt = {"runtime": s["runtime"]} if s.get("runtime") else {}  # dlib: torch (default) | dlib
    enc = IDENTITY_ENCODERS.create(cfg.evaluate.identity.backend, **rt)
    enc.embed(frames[:2], [box, box])
    n = 0
    with Meter() as m:
        for i in range(0, len(frames), 8):
            chunk = frames[i : i + 8]
            n += sum(len(e) for e in enc.embed(chunk, [box] * len(chunk)))
    return {**m.as_dict(), "frames": len(frames), "faces": n, "backend": cfg.evaluate.identity.backend,
            "runtime": getattr(enc, "runtime", "")}


def task_evaluate(s: dict[str, Any]) -> dict[str, Any]:
    """``deid.evaluate.evaluate_outputs`` (pose OKS AP, identity, re-identification,
    clinical features) of ``processed`` against ``original``."""
    from deid.evaluate import evaluate_outputs

    cfg = _cfg(s.get("set"), s.get("config"))
    with Meter() as m:
        r = evaluate_outputs(s["original"], s["processed"], s["out"], cfg, progress=False, distractors=s.get("distractors"))
    return {**m.as_dict(), "errors": r.get("errors", {}), "methods": len(s["processed"])}


def task_archive(s: dict[str, Any]) -> dict[str, Any]:
    """The in-process archive runner (segments, stitching, audit) on a CSV manifest."""
    from deid.archive import load_manifest, run_archive_in_process

    cfg = _cfg(s.get("set"), s.get("config"))
    man = load_manifest(s["manifest"], out_dir=s["out"])
    with Meter() as m:
        run = run_archive_in_process(man, cfg, s["out"], overwrite=True)
    return {**m.as_dict(), "summary": run.summary(), "ok": run.ok}


def task_ray_archive(s: dict[str, Any]) -> dict[str, Any]:
    """The Ray archive job in local mode (``ray_jobs.deidentify.main``, as ``deid demo``
    calls it) on the same manifest."""
    from deid.config import dump_config
    from ray_jobs.deidentify import main as ray_main

    cfg = _cfg(s.get("set"), s.get("config"))
    cfg_path = Path(s["out"]).parent / "ray_bench_config.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(dump_config(cfg))
    argv = ["--manifest", s["manifest"], "--out", s["out"], "--config", str(cfg_path), "--no-evaluate", "--no-report", "--local"]
    with Meter() as m:
        rc = ray_main(argv)
    return {**m.as_dict(), "rc": rc, "ok": rc == 0, "argv": argv}


def task_ray_startup(s: dict[str, Any]) -> dict[str, Any]:
    """Ray's fixed cost alone: start the local one-node instance the archive job starts
    (``ray_jobs.cluster.connect(cfg, local=True)``) and shut it down again."""
    import ray

    from ray_jobs.cluster import connect

    cfg = _cfg(s.get("set"), s.get("config"))
    with Meter() as m:
        connect(cfg, local=True)
        ray.shutdown()
    return {**m.as_dict()}


TASKS = {k[5:]: v for k, v in globals().items() if k.startswith("task_")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in TASKS:
        print(f"usage: python -m bench.child {{{','.join(TASKS)}}} '<json spec>'", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        out = TASKS[argv[0]](json.loads(argv[1]))
        out.setdefault("ok", True)
    except Exception as e:  # noqa: BLE001 - reported to the parent as data
        out = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
    emit(out)
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
