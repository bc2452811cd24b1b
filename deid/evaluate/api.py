"""``evaluate_outputs``: one original video and its de-identified versions, end to end
(what ``deid evaluate`` and ``deid anonymize --evaluate`` run in one process).

Order of work: probe everything (frame counts must agree before any model runs); one
pass over the original (poses = ground truth; faces located and embedded, with the
blank-face control); the references (patient, target, distractor gallery); one pass
per processed video (poses; attacker's faces; embeddings at the original's face
boxes); scoring (pure); the video's partitions; :func:`~deid.evaluate.store.aggregate`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import DeidError, InvalidInputError

log = logging.getLogger(__name__)

RESERVED_METHODS = ("original",)


def method_from_name(path: str | os.PathLike) -> str:
    """``clip.blur.mp4`` -> ``blur`` (the pipeline's ``<stem>.<method>.<ext>`` naming)."""
    parts = Path(path).name.split(".")
    if len(parts) < 3 or not parts[-2]:
        raise InvalidInputError(
            f"{path}: cannot tell the method from the file name (expected <stem>.<method>.mp4, e.g. clip.blur.mp4); "
            "pass it as METHOD=PATH"
        )
    return parts[-2]


def parse_processed(specs: Sequence[str]) -> dict[str, str]:
    """``["clip.blur.mp4", "mask=/x/y.mp4"]`` -> ``{"blur": ..., "mask": ...}``."""
    out: dict[str, str] = {}
    for s in specs:
        if "=" in s and not Path(s).exists():
            m, _, p = s.partition("=")
            m, p = m.strip(), p.strip()
            if not m or not p:
                raise InvalidInputError(f"--processed {s!r}: expected METHOD=PATH or a file named <stem>.<method>.mp4")
        else:
            m, p = method_from_name(s), s
        if m in out:
            raise InvalidInputError(f"method {m!r} given twice ({out[m]} and {p}); give each method one video")
        out[m] = p
    return out


def _check_methods(processed: Mapping[str, Any]) -> None:
    if not processed:
        raise InvalidInputError("nothing to evaluate: give at least one processed video")
    for m in processed:
        if not m or m in RESERVED_METHODS or "/" in m or "=" in m:
            raise InvalidInputError(
                f"method name {m!r} is not allowed ('original' is the sanity row of the original against itself); "
                "name it METHOD=PATH"
            )


def _frames_to_evaluate(original: str, info_o: Any, infos: Mapping[str, Any], max_frames: int, warn: bool = True) -> int:
    n = info_o.frame_count
    for m, inf in infos.items():
        if inf.frame_count == n:
            continue
        if inf.frame_count_exact and info_o.frame_count_exact:
            raise InvalidInputError(
                f"{inf.path} ({m}) has {inf.frame_count} frames but the original {original} has {n}; the evaluation "
                "compares frame by frame, so outputs must keep every frame (re-run `deid anonymize` with "
                "track.fail_closed=redact, not drop)"
            )
        if warn:
            log.warning("%s: frame count %d (estimated) differs from the original's %d; evaluating the common frames",
                        inf.path, inf.frame_count, n)
        n = min(n, inf.frame_count)
    return min(n, max_frames) if max_frames > 0 else n


def comparable_outputs(original: str, processed: Mapping[str, str], max_frames: int) -> tuple[Any, dict[str, Any], int, dict[str, str]]:
    """Probe the original and its outputs: ``(original's VideoInfo, {method: VideoInfo}
    of the outputs that can be compared, frames to evaluate, {method: why} of those
    refused)``. An output of another frame size, with a frame dropped, or unreadable is
    refused on its own and the others are evaluated; only when none can be does this
    raise :class:`InvalidInputError`. Shared by :func:`evaluate_outputs` and the archive's
    Ray evaluation (``ray_jobs.evaluate``)."""
    from ..io import probe
    from ..io.encode import even_size

    info_o = probe(original)
    infos: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for m, p in processed.items():
        try:
            inf = probe(p)
            # deid pads an odd width or height by one replicated pixel on the right / bottom
            # (yuv420p): the content keeps its pixel coordinates, so such an output compares
            if (inf.width, inf.height) not in ((info_o.width, info_o.height), even_size(info_o.width, info_o.height)):
                raise InvalidInputError(
                    f"{inf.path} ({m}) is {inf.width}x{inf.height} but the original is {info_o.width}x{info_o.height}; "
                    "keypoints are compared in pixels, so outputs must keep the original's frame size"
                )
            _frames_to_evaluate(original, info_o, {m: inf}, 0, warn=False)  # refuses a dropped frame
            infos[m] = inf
        except DeidError as e:
            refused[m] = str(e)
    if not infos:
        raise InvalidInputError("; ".join(refused.values()))
    return info_o, infos, _frames_to_evaluate(original, info_o, infos, max_frames), refused


def _progress_bar(total: int, desc: str, enabled: bool | None):
    from tqdm import tqdm

    show = sys.stderr.isatty() if enabled is None else bool(enabled and sys.stderr.isatty())
    return tqdm(total=total, desc=desc, unit="frame", disable=not show, leave=False)


def evaluate_outputs(
    original: str | os.PathLike,
    processed: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    cfg: Any = None,
    *,
    references: Sequence[str | os.PathLike] = (),
    target_faces: str | os.PathLike | None = None,
    distractors: Sequence[str] | None = None,
    video_id: str | None = None,
    models: Any = None,
    progress: bool | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``processed`` ({method: video}) against ``original`` into the METRICS_DIR
    ``out_dir`` (see :mod:`deid.evaluate.store`); several videos may be evaluated into
    the same directory one after another.

    ``references``: photos of the patient (default: the original video's own faces);
    ``target_faces``: a folder of photos or a video of the swap donor; ``distractors``:
    ``PATH`` or ``NAME=PATH`` items, one identity each (default: demo clips + packaged
    donor, see :mod:`deid.evaluate.references`; ``[]`` for none). ``video_id``: the id
    used in every table (default: the original's file stem). ``progress``: tqdm bars
    (None = when stderr is a terminal).

    Returns ``{"video", "metrics_dir", "summary" (rows of this video), "table" (the
    printed table), "references", "errors" ({method: message} of outputs that could
    not be evaluated), "run" (run.json)}``."""
    from .. import __version__
    from ..config import Config
    from .extract import extract
    from .models import EvalModels
    from .references import build_references, default_distractors, default_target, split_label
    from .score import score_method
    from .store import aggregate, clear_method_scores, write_method_scores, write_status_from_audits, write_video_entry
    from .table import format_table

    cfg = cfg if cfg is not None else Config()
    ev = cfg.evaluate
    processed = {str(m): str(p) for m, p in processed.items()}
    _check_methods(processed)
    original = str(original)
    from .store import table_video_id

    vid = table_video_id(video_id or Path(original).stem)
    if vid != (video_id or Path(original).stem):
        log.info("%s: its id is too long for a file name; the tables name it %s", original, vid)
    out = Path(out_dir)

    info_o, infos, n, refused = comparable_outputs(original, processed, ev.max_frames)
    asked = dict(processed)  # the video's entry lists every output (a refused one with its error)
    processed = {m: p for m, p in processed.items() if m in infos}
    out.mkdir(parents=True, exist_ok=True)  # after the inputs are checked: a refused call leaves no empty folder
    for m, e in refused.items():
        log.error("%s: %s output not evaluated: %s", vid, m, e)
        clear_method_scores(out, vid, m)  # no earlier evaluation's numbers stand in for this one
    mdl = models or EvalModels.cached(cfg)
    from ..identity import effective_threshold

    thr = effective_threshold(mdl.encoder, ev.identity.threshold)
    dist = mdl.encoder.distance
    common = dict(estimator=mdl.estimator, encoder=mdl.encoder, detector=mdl.detector, every=ev.identity_every,
                  stop=n, chunk_size=cfg.io.chunk_size, decoder=cfg.io.decoder, batch_mb=cfg.io.batch_mb)

    bar = _progress_bar(n * (1 + len(processed)), f"evaluate {vid}"[:40], progress)

    def tick(k: int) -> None:
        bar.update(k)
        if on_progress is not None:
            on_progress(k)

    try:
        okp, ofaces = extract(original, locator=mdl.locator, null_control=True, info=info_o, progress=tick, **common)
        assert okp is not None and ofaces is not None
        # --- references
        if distractors is None:
            dlist = [(lab, str(p)) for lab, p in default_distractors(original)] if ev.default_distractors else []
        else:
            dlist = []
            for s in distractors:
                lab, p = split_label(str(s))
                dlist.append((lab or Path(p).stem, p))
        target = target_faces if target_faces is not None else (default_target(cfg) if "swap" in processed else None)
        refs = build_references(
            encoder=mdl.encoder, detector=mdl.detector, distance=dist, threshold=thr,
            patient_photos=[str(r) for r in references],
            original_faces=None if references else ofaces, target=target, distractors=dlist,
            gallery_size=ev.gallery_size, sample_frames=ev.sample_frames, margin=cfg.audit.null_margin,
        )
        score_kw = dict(fps=info_o.fps, distance=dist, threshold=thr, null_margin=cfg.audit.null_margin,
                        min_face_px=cfg.audit.min_face_px,
                        vis_threshold=ev.pose.min_score, pose_backend=mdl.pose["name"],
                        identity_backend=mdl.identity["name"], deid_version=__version__)
        rows: list[dict[str, Any]] = []
        errors: dict[str, str] = dict(refused)
        s0 = score_method(vid, "original", okp, okp, ofaces, ofaces.as_processed(), refs, **score_kw)
        write_method_scores(out, s0)
        rows.append(s0.summary)
        for m, p in processed.items():
            try:
                pkp, pfaces = extract(p, at=ofaces, info=infos[m], progress=tick, **common)
                assert pkp is not None and pfaces is not None
                s = score_method(vid, m, okp, pkp, ofaces, pfaces, refs, **score_kw)
            except DeidError as e:
                log.error("%s: %s output not evaluated: %s", vid, m, e)
                errors[m] = str(e)
                clear_method_scores(out, vid, m)  # no earlier evaluation's numbers stand in for this one
                continue
            write_method_scores(out, s)
            rows.append(s.summary)
    finally:
        bar.close()

    # --- status (from the pipeline's audit records), the video's entry, aggregate
    audits = write_status_from_audits(out, vid, asked)
    info = {"fps": info_o.fps, "width": info_o.width, "height": info_o.height, "frame_count": info_o.frame_count,
            "frames_evaluated": n}
    entry = {
        "video": vid,
        "original": original,
        "processed": asked,
        **info,
        "audit": audits,
        "references": refs.describe(),
        "errors": errors,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run": {"config": cfg.to_dict(), "pose_backend": mdl.pose, "identity_backend": mdl.identity},
    }
    write_video_entry(out, entry)
    run = aggregate(out)
    table = format_table(rows, video=vid, info=info, pose=mdl.pose, identity=mdl.identity, references=refs.describe())
    for m, e in errors.items():
        table += f"\nerror: {m}: {e}"
    return {"video": vid, "metrics_dir": str(out), "summary": rows, "table": table, "references": refs.describe(),
            "errors": errors, "run": run}
