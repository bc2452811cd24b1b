"""Audit records and the automatic leak audit.

Every published output has, beside it:
- ``<stem>.<method>.audit.json``: what was done and what was found (input sha256, config
  hash, method and parameters, frame counts, detection/tracking counts, fail-closed
  frames, timings, leak-audit result, status and error);
- ``<stem>.<method>.frames.parquet``: every frame's decision (ok / fail_closed), whether a
  person was present, and each region's box and provenance (detected, interpolated,
  held, pose).

The leak audit re-checks the finished output *before* it is published. On evenly spaced
sample frames, and on risk frames where the regions rest on the least evidence (no face
detected, every region held, interpolated or pose-placed: :func:`audit_pairs`), it plays
the attacker the paper uses (dlib's 128-d face recognition, same person when the
distance is under 0.6):
1. *same place* (an oracle attacker who knows where the face was): the output frame is
   embedded at every face box dlib's own detector (and our detector) found in the input
   frame, and compared with the input face there. Because a recogniser's chip also sees
   context (hair, clothes, background) and small faces embed poorly, each face is also
   compared with a *null* (the region greyed out); see :func:`leak_audit`;
2. *anywhere*: dlib's detector searches the output frame; every face it finds is compared
   with every input face of the sampled frames.
A leak stops publication by default (``audit.on_leak``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from . import __version__
from .config import AuditConfig, Config
from .io import probe, read_frames
from .track.boxes import pad_face_box
from .types import BoxSource, FrameDecision, FramePlan

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import MethodOutput, VideoResult

log = logging.getLogger(__name__)

AUDIT_SCHEMA_VERSION = "1"
FRAMES_SCHEMA_VERSION = "1"


def sample_indices(frame_count: int, n: int) -> list[int]:
    """``n`` evenly spaced frame indices (all frames when n == 0 or n >= frame_count)."""
    if frame_count <= 0:
        return []
    if n <= 0 or n >= frame_count:
        return list(range(frame_count))
    return sorted(set(int(round(x)) for x in np.linspace(0, frame_count - 1, n)))


_HOG: dict[int, Any] = {}


def _hog(max_side: int = 1920) -> Any:
    """The audit's face detector: dlib HOG, upsample 1, as the attacker of Zhu et al.,
    on frames downscaled to ``max_side`` (``audit.max_side``); on two threads where the
    process may use two CPUs (detection is most of the audit's time)."""
    if max_side not in _HOG:
        from .detect.dlib_backend import DlibHogDetector

        _HOG[max_side] = DlibHogDetector(upsample=1, max_side=max_side, threads=0)
    return _HOG[max_side]


def _forget_hog() -> None:
    _HOG.clear()  # a forked child builds its own (the parent's lock may be held at the fork)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_hog)


def _valid(e: np.ndarray) -> np.ndarray:
    e = np.asarray(e, np.float32)
    if e.size == 0:
        return e.reshape(0, e.shape[-1] if e.ndim == 2 else 0)
    return e[~np.isnan(e).any(axis=1)]


def _null_frame(frame: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """The frame with every region filled with its own mean colour: what a recogniser
    sees when the face carries no structure at all, only its average tint (the control
    for context, tint and weak faces)."""
    g = frame.copy()
    h, w = frame.shape[:2]
    for b in regions:
        x1, y1 = max(0, int(np.floor(b[0]))), max(0, int(np.floor(b[1])))
        x2, y2 = min(w, int(np.ceil(b[2]))), min(h, int(np.ceil(b[3])))
        if x2 > x1 and y2 > y1:
            g[y1:y2, x1:x2] = frame[y1:y2, x1:x2].reshape(-1, 3).mean(axis=0).astype(np.uint8)
    return g


def audit_pairs(n_in: int, n_out: int, cfg: AuditConfig, rows: "FrameRows | None" = None,
                dropped: bool = False) -> tuple[list[tuple[int, int]], set[int]]:
    """The frames the leak audit re-identifies, as (input frame, output frame) pairs, and
    the risk frames among them (output frame numbers).

    ``audit.sample_frames`` output frames evenly spaced, plus up to ``audit.risk_frames``
    of the :meth:`FrameRows.uncertain_frames` (evenly spread over them) not already
    sampled. With ``dropped`` (``track.fail_closed: drop``) output frame j is the j-th
    frame of ``rows`` that was written, so each output frame is compared with its own
    input frame rather than with the input frame of the same number (the evenly spaced
    frames are then those of the output and the input's that were written)."""
    def position(frames: np.ndarray, kept: np.ndarray) -> np.ndarray:
        """Output positions of the input ``frames`` that were written."""
        j = np.searchsorted(kept, frames)
        ok = j < len(kept)
        ok[ok] = kept[j[ok]] == frames[ok]
        return j[ok]

    if rows is not None and len(rows):
        # the written frames, in order: all of them unless fail-closed ones were dropped
        # (a frame missing from a partial read is not in ``rows`` either)
        kept = (rows.kept_frames() if dropped else np.frombuffer(rows.frame, np.int32)).astype(np.int64)[: max(0, n_out)]
    else:
        kept = np.arange(max(0, min(n_in, n_out)), dtype=np.int64)
    n = len(kept)
    # evenly spaced output frames, and the input's evenly spaced frames (those the
    # pipeline kept the plans of) that were written: the same frames unless some were
    # dropped, when the union keeps the count up whichever frames were dropped
    even = sorted(set(sample_indices(n, cfg.sample_frames))
                  | set(position(np.asarray(sample_indices(n_in, cfg.sample_frames), np.int64), kept).tolist()))
    picked: list[int] = []
    if cfg.risk_frames > 0 and rows is not None and len(rows) and len(even) < n:
        cand = np.setdiff1d(position(rows.uncertain_frames().astype(np.int64), kept), np.asarray(even, np.int64))
        if len(cand) > cfg.risk_frames:
            cand = cand[np.unique(np.round(np.linspace(0, len(cand) - 1, cfg.risk_frames)).astype(int))]
        picked = [int(x) for x in cand]
    out = sorted(set(even) | set(picked))
    return [(int(kept[j]), j) for j in out], set(picked)


def covered_fraction(box: np.ndarray, regions: np.ndarray) -> float:
    """How much of ``box`` (x0, y0, x1, y1) lies inside the union of ``regions``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = int(np.ceil(x1 - x0)), int(np.ceil(y1 - y0))
    if w <= 0 or h <= 0:
        return 0.0
    grid = np.zeros((h, w), bool)
    for r in np.asarray(regions, np.float32).reshape(-1, 4):
        a, b = int(np.clip(np.floor(r[0] - x0), 0, w)), int(np.clip(np.ceil(r[2] - x0), 0, w))
        c, d = int(np.clip(np.floor(r[1] - y0), 0, h)), int(np.clip(np.ceil(r[3] - y0), 0, h))
        grid[c:d, a:b] = True
    return float(grid.mean())


def _audit_reference(input_path: str | Path, idx: list[int], identity: Any, plans: dict[int, FramePlan] | None,
                     min_px: float, rows: "FrameRows | None" = None, max_side: int = 1920) -> dict[str, Any]:
    """The input side of :func:`leak_audit` for the sampled frames ``idx``: the face boxes
    to compare at (dlib's, and our detector's from ``plans``), their embeddings in the
    input and in the input's null frames (greyed over the frame's regions: from ``plans``,
    or for frames without a kept plan, the risk frames, from ``rows``)."""
    fin = read_frames(input_path, idx)
    idx = idx[: len(fin)]
    row_regions = rows.region_boxes(i for i in idx if not (plans and i in plans)) if rows is not None else {}
    det_in = _hog(max_side).detect(fin)
    boxes_in, regions, origin, planned = [], [], [], []
    too_small: list[int] = []  # a frame's faces under min_px

    def big_enough(x: np.ndarray) -> bool:
        ok = max(float(x[2] - x[0]), float(x[3] - x[1])) >= min_px
        too_small[-1] += not ok
        return ok

    for i, d in zip(idx, det_in):
        too_small.append(0)
        b = [np.asarray(x, np.float32) for x in d.boxes if big_enough(x)]
        src = ["dlib"] * len(b)
        if plans and i in plans:  # our detector's raw face boxes too (stricter than dlib alone)
            for f in plans[i].faces:
                if f.source == BoxSource.DETECTED and f.face_box is not None and big_enough(f.face_box):
                    b.append(f.face_box)
                    src.append("deid")
        boxes_in.append(np.asarray(b, np.float32).reshape(-1, 4))
        origin.append(src)
        reg = [f.box for f in plans[i].faces] if plans and i in plans else list(row_regions.get(i, ()))
        planned.append(np.asarray(reg, np.float32).reshape(-1, 4))
        regions.append(np.asarray(reg + [pad_face_box(x, 0.3, 0.55, 0.25) for x in b], np.float32).reshape(-1, 4))
    nulls = [_null_frame(f, r) for f, r in zip(fin, regions)]
    return {
        "idx": idx,
        "boxes_in": boxes_in,
        "origin": origin,
        "planned": planned,  # the regions the output was rendered with (whether a leaking face was missed)
        "too_small": too_small,
        "emb_in": identity.embed(fin, boxes_in) if len(fin) else [],
        "emb_null": identity.embed(nulls, boxes_in) if len(fin) else [],
    }


def leak_audit(
    input_path: str | Path,
    output_path: str | Path,
    cfg: AuditConfig,
    identity: Any,
    plans: dict[int, FramePlan] | None = None,
    reference: dict | None = None,
    rows: "FrameRows | None" = None,
    dropped: bool = False,
    frame_counts: tuple[int | None, int | None] = (None, None),
) -> dict[str, Any]:
    """Re-identification check of ``output_path`` against ``input_path`` (see module doc).

    Same place, one rule: an output face leaks when its distance ``d`` to the input face
    is under the threshold **and** under ``d_null - null_margin``, where ``d_null`` is the
    input face's distance to the *null* (the same frame with the region filled by its mean
    colour). For a face the recogniser separates well from a blank (``d_null >= threshold
    + margin``, counted as *verifiable*) the second condition follows from the first; for
    small or poor faces it is what matters: dlib put a flat grey box 0.56 from a real face
    on the pancake clip, inside 0.6, so "under 0.6" alone would call even a solid mask a
    match. The output must carry face information that a blank does not.

    Faces under ``min_face_px`` (longer side) are not re-identified (``faces_too_small``):
    dlib's recogniser works on 150-px chips and its distances between tiny faces are noise
    (a blurred 16x20-px background face scored 0.22 from the original, a flat fill 0.35).

    ``reference``: a dict shared by the calls for several outputs of the same input (same
    ``plans``, ``cfg`` and ``identity``; :func:`deid.pipeline.finalize_outputs` passes one
    per video): the input side — the sampled input frames' faces, their embeddings and
    their nulls' — is computed once per set of sampled frames instead of once per output.

    ``rows`` (the video's frame decisions) adds the risk frames and, with ``dropped``
    (``track.fail_closed: drop``), pairs each output frame with its own input frame (see
    :func:`audit_pairs`); leak frames are reported as input frame numbers.
    ``frame_counts``: the input's and the output's frame counts when the caller has them
    (each unknown one is probed, which reads the whole file)."""
    t0 = time.perf_counter()
    n_in, n_out = frame_counts
    n_in = probe(input_path).frame_count if n_in is None else int(n_in)
    n_out = probe(output_path).frame_count if n_out is None else int(n_out)
    pairs, risk = audit_pairs(n_in, n_out, cfg, rows, dropped)
    idx, idx_out = [i for i, _ in pairs], [j for _, j in pairs]
    risk = {i for i, j in pairs if j in risk}  # input numbers of the risk frames
    ref = reference.get(tuple(idx)) if reference is not None else None
    if ref is None:
        ref = _audit_reference(input_path, idx, identity, plans, float(cfg.min_face_px), rows, int(cfg.max_side))
        if reference is not None:
            reference[tuple(idx)] = ref
    fout = read_frames(output_path, idx_out)
    k = min(len(ref["idx"]), len(fout))
    fout, idx = fout[:k], ref["idx"][:k]
    boxes_in, origin, too_small = ref["boxes_in"][:k], ref["origin"][:k], int(sum(ref["too_small"][:k]))
    n_risk = len(set(idx) & risk)  # of the frames actually compared (a short read checks fewer)
    emb_in, emb_null = ref["emb_in"][:k], ref["emb_null"][:k]
    hog = _hog(int(cfg.max_side))
    det_out = hog.detect(fout)
    from .identity import effective_threshold

    thr = effective_threshold(identity, cfg.threshold)  # 0.6 is dlib's; ArcFace keeps its own
    margin = float(cfg.null_margin)
    emb_same = identity.embed(fout, boxes_in) if k else []
    emb_any = identity.embed(fout, [d.boxes for d in det_out]) if k else []
    refs = [_valid(e) for e in emb_in if len(e)]
    refs_all = np.concatenate(refs) if refs else np.zeros((0, getattr(identity, "dim", 128)), np.float32)
    planned = ref.get("planned") or [np.zeros((0, 4), np.float32)] * k
    leak_frames: list[int] = []
    missed_frames: list[int] = []  # leaks of a face outside every region: the detector and tracker missed it
    faces = verifiable = dlib_faces = 0
    min_d = float("inf")
    d_same_all: list[float] = []
    for j, i in enumerate(idx):
        leak = missed = False
        a, b, n = np.asarray(emb_in[j]), np.asarray(emb_same[j]), np.asarray(emb_null[j])
        for r in range(len(a)):
            if np.isnan(a[r]).any() or np.isnan(b[r]).any():
                continue
            faces += 1
            dlib_faces += origin[j][r] == "dlib"
            d = float(identity.distance(a[r : r + 1], b[r : r + 1])[0, 0])
            dn = float(identity.distance(a[r : r + 1], n[r : r + 1])[0, 0]) if not np.isnan(n[r]).any() else 0.0
            d_same_all.append(d)
            min_d = min(min_d, d)
            verifiable += dn >= thr + margin
            if d < thr and d < dn - margin:
                leak = True
                missed |= covered_fraction(boxes_in[j][r], planned[j]) < 0.5
        c = _valid(emb_any[j])
        if len(c) and len(refs_all):
            dd = identity.distance(c, refs_all).min(axis=1)
            d = float(dd.min())
            min_d = min(min_d, d)
            if d < thr:
                leak = True
                found = [b for b, e in zip(det_out[j].boxes, emb_any[j]) if np.isfinite(np.asarray(e)).all()]
                missed |= any(covered_fraction(b, planned[j]) < 0.5 for b, x in zip(found, dd) if x < thr)
        if leak:
            leak_frames.append(int(i))
            if missed:
                missed_frames.append(int(i))
    text = _text_check(fout) if cfg.text_check else None
    return {
        "checked_frames": len(idx),
        "risk_frames": n_risk,
        "input_faces": faces,
        "input_faces_dlib": dlib_faces,
        "verifiable_faces": verifiable,
        "faces_too_small": too_small,
        "output_faces_found": int(sum(len(d) for d in det_out)),
        "leaks": len(leak_frames),
        "leak_frames": leak_frames,
        # of those, frames where a leaking face lay outside every region (a missed face,
        # not a weak method: a stronger blur would not have hidden it)
        "leak_frames_missed": missed_frames,
        "min_distance": None if min_d == float("inf") else round(min_d, 4),
        "mean_distance_same_place": round(float(np.mean(d_same_all)), 4) if d_same_all else None,
        "threshold": thr,
        "null_margin": margin,
        "attacker": attacker_name(identity),
        # lines of text at the same place in most of the output's sampled frames (a
        # device's name banner or clock that anonymize.fixed_regions does not cover)
        "text_regions": text,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def attacker_name(identity: Any) -> str:
    """The audit's attacker as its record names it: the detector and the recogniser, with
    the recogniser's model file where it is the user's (ArcFace comes from
    $DEID_ARCFACE_MODEL, which no config records)."""
    name = getattr(identity, "name", type(identity).__name__)
    path = getattr(identity, "model_path", "") or ""
    return f"dlib HOG detector + {name} identity encoder" + (f" ({os.path.basename(str(path))})" if path else "")


#: frames of the output the text check reads (from the audit's sample, evenly spaced)
TEXT_CHECK_FRAMES = 8


def _text_check(frames: list[np.ndarray]) -> list[list[float]] | None:
    """Burnt-in text left in an output: :func:`deid.overlays.text_regions` (the grey
    picture only, for speed) on up to :data:`TEXT_CHECK_FRAMES` of the audit's frames;
    the boxes as fractions of the frame. None where it cannot run (too few frames, an
    OpenCV without its text module)."""
    from .overlays import swt_available, text_regions

    if len(frames) < 4 or not swt_available():
        return None
    pick = sample_indices(len(frames), TEXT_CHECK_FRAMES)
    return [list(o.fraction) for o in text_regions([frames[i] for i in pick], channels=())]


#: config keys that hold a file or folder name (``ray.manifest``, ``ray.out_dir``,
#: ``swap.workdir``, ``detect.model_path``, ...): left out of pseudonymous audit records
#: even when relative and one word (``--manifest Doe_John``)
_PATH_KEY = re.compile(r"(_path|_dir|_root|^manifest|^workdir|^donor_library)$")
_LEFT_OUT = "<path left out: io.output_names=pseudonym>"


def hide_input_in(text: str, input_path: str | os.PathLike) -> str:
    """``text`` (an error) with the input's path and file name replaced by ``<input>``:
    what a pseudonymous record or status row says of its video."""
    return text.replace(str(input_path), "<input>").replace(Path(input_path).name, "<input>")


def _without_paths(d: Any, key: str = "") -> Any:
    """``d`` with every path left out: the values of the path-valued keys
    (:data:`_PATH_KEY`) and any other string holding a ``/`` or ``\\``; folders (the
    manifest's, the output's) may name the patient too."""
    if isinstance(d, dict):
        return {k: _without_paths(v, str(k)) for k, v in d.items()}
    if isinstance(d, list):
        return [_without_paths(v) for v in d]
    if isinstance(d, str) and d and (_PATH_KEY.search(key) or "/" in d or "\\" in d):
        return _LEFT_OUT
    return d


def build_audit_record(
    res: "VideoResult",
    mo: "MethodOutput",
    cfg: Config,
    input_sha: str,
    chash: str,
    timings: Any,
    method_hash: str = "",
) -> str:
    method_params: dict[str, Any]
    if mo.method in ("blur", "pixelate", "mask"):
        method_params = getattr(cfg.anonymize, mo.method).__dict__.copy()
    elif mo.method == "swap":
        method_params = cfg.swap.__dict__.copy()
    else:
        method_params = {}
    hide = cfg.io.output_names == "pseudonym"  # the input's path may name the patient

    def _hidden(d: Any) -> Any:  # the swap's session folder, a model path: may name the patient
        return _without_paths(d) if hide else d

    error = res.error
    if hide and error:  # the input named by its path or by its file name alone
        error = hide_input_in(error, res.input)
    rec = {
        "schema_version": AUDIT_SCHEMA_VERSION,
        "deid_version": __version__,
        "created_unix": int(time.time()),
        "status": res.status,
        "error": error,
        "input": {
            "path": None if hide else res.input,
            "sha256": input_sha,
            "video": ({k: v for k, v in res.info.to_dict().items() if k != "path" or not hide}) if res.info else None,
        },
        "output": {"path": Path(mo.path).name if hide else mo.path, "sha256": mo.sha256, "frames_written": mo.frames_written, "audio": mo.audio, "metadata_stripped": True},
        "method": mo.method,
        "method_params": _hidden(json.loads(json.dumps(method_params, default=list))),
        "config_hash": chash,
        # deid.archive.method_config_hash of this output (paths and donor included): how
        # --skip-existing, and an archive's rerun that lost its status table, know the
        # output is current
        **({"method_config_hash": method_hash} if method_hash else {}),
        "config": _hidden(cfg.to_dict()),
        "frames_read": res.frames_read,
        "counts": res.counts,
        "fail_closed_policy": cfg.track.fail_closed,
        "anonymizer_stats": _hidden(mo.anonymizer_stats),
        "leak_audit": _hidden(mo.leak or {"skipped": True}),
        # "total": the video's seconds up to this record (the result adds its final total)
        "timings_s": {k: round(v, 4) for k, v in {**timings.seconds, "total": timings.seconds.get("total", timings.elapsed())}.items()},
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
    }
    return json.dumps(rec, indent=2, default=str)


class FrameRows:
    """Every frame's decision for the frames table, kept compactly: a few bytes a frame
    and 17 a region in typed arrays rather than Python objects a frame, so a long video's
    bookkeeping does not grow the process by tens of MB. ``append`` / ``extend`` take
    rows ``(frame, decision, person_present, sources, boxes)``; iterating gives them
    back (boxes rounded to 0.1 px, as float32 in the table)."""

    _DECISIONS = tuple(d.value for d in FrameDecision)
    _SOURCES = tuple(b.value for b in BoxSource)

    def __init__(self, rows: Iterable[tuple] = ()):
        from array import array

        self.frame = array("i")
        self.decision = array("B")
        self.present = array("B")
        self.nfaces = array("H")
        self.source = array("B")
        self.boxes = array("f")
        self.extend(rows)

    def append(self, frame: int, decision: str, present: bool, sources: Sequence[str], boxes: Sequence[Sequence[float]]) -> None:
        if len(sources) != len(boxes):
            raise ValueError(f"frame {frame}: {len(sources)} sources for {len(boxes)} boxes")
        self.frame.append(int(frame))
        self.decision.append(self._DECISIONS.index(str(getattr(decision, "value", decision))))
        self.present.append(int(bool(present)))
        self.nfaces.append(len(boxes))
        for src, box in zip(sources, boxes):
            self.source.append(self._SOURCES.index(str(getattr(src, "value", src))))
            self.boxes.extend(round(float(x), 1) for x in box)

    def extend(self, rows: Iterable[tuple]) -> None:
        if isinstance(rows, FrameRows):
            for name in ("frame", "decision", "present", "nfaces", "source", "boxes"):
                getattr(self, name).extend(getattr(rows, name))
            return
        for r in rows:
            self.append(*r)

    def __len__(self) -> int:
        return len(self.frame)

    def kept_frames(self) -> np.ndarray:
        """Input frame numbers of the frames that were written, in order (a fail-closed
        frame is not written when ``track.fail_closed`` is ``drop``)."""
        fc = self._DECISIONS.index(FrameDecision.FAIL_CLOSED.value)
        return np.frombuffer(self.frame, np.int32)[np.frombuffer(self.decision, np.uint8) != fc]

    def uncertain_frames(self) -> np.ndarray:
        """Frame numbers whose regions rest on the least evidence: decided ok, with
        regions, none of them a detection in that frame (all held, interpolated or
        placed from body keypoints) — where a region that lags the face would leak."""
        frames = np.frombuffer(self.frame, np.int32)
        if not len(frames):
            return np.zeros(0, np.int32)
        nfaces = np.frombuffer(self.nfaces, np.uint16).astype(np.int64)
        det = np.frombuffer(self.source, np.uint8) == self._SOURCES.index(BoxSource.DETECTED.value)
        owner = np.repeat(np.arange(len(frames)), nfaces)
        detected = np.zeros(len(frames), np.int64)
        np.add.at(detected, owner, det.astype(np.int64))
        ok = np.frombuffer(self.decision, np.uint8) == self._DECISIONS.index(FrameDecision.OK.value)
        return frames[ok & (nfaces > 0) & (detected == 0)]

    def region_boxes(self, frames: Iterable[int]) -> dict[int, np.ndarray]:
        """The regions (head boxes, (n, 4)) of the given frame numbers that have rows."""
        fr = np.frombuffer(self.frame, np.int32)
        if not len(fr):
            return {}
        nfaces = np.frombuffer(self.nfaces, np.uint16).astype(np.int64)
        start = np.concatenate([[0], np.cumsum(nfaces)])
        boxes = np.frombuffer(self.boxes, np.float32).reshape(-1, 4)
        order = np.argsort(fr, kind="stable")
        out: dict[int, np.ndarray] = {}
        for f in frames:
            j = int(np.searchsorted(fr, f, sorter=order))
            if j < len(fr) and fr[order[j]] == f:
                r = int(order[j])
                out[int(f)] = boxes[start[r] : start[r + 1]].copy()
        return out

    def __iter__(self) -> Iterator[tuple]:
        k = 0
        for i in range(len(self.frame)):
            n = self.nfaces[i]
            srcs = [self._SOURCES[c] for c in self.source[k : k + n]]
            boxes = [list(self.boxes[4 * j : 4 * j + 4]) for j in range(k, k + n)]
            k += n
            yield (self.frame[i], self._DECISIONS[self.decision[i]], bool(self.present[i]), srcs, boxes)

    def arrow_columns(self) -> dict[str, Any]:
        import pyarrow as pa

        nfaces = np.frombuffer(self.nfaces, np.uint16)
        offsets = pa.array(np.concatenate([[0], np.cumsum(nfaces, dtype=np.int32)]).astype(np.int32))
        return {
            "frame": pa.array(np.frombuffer(self.frame, np.int32), pa.int32()),
            "decision": pa.array(np.asarray(self._DECISIONS, object)[np.frombuffer(self.decision, np.uint8)], pa.string()),
            "person_present": pa.array(np.frombuffer(self.present, np.uint8).astype(bool), pa.bool_()),
            "sources": pa.ListArray.from_arrays(offsets, pa.array(np.asarray(self._SOURCES, object)[np.frombuffer(self.source, np.uint8)], pa.string())),
            "boxes": pa.ListArray.from_arrays(offsets, pa.FixedSizeListArray.from_arrays(pa.array(np.frombuffer(self.boxes, np.float32), pa.float32()), 4)),
        }


def write_frames_table(path: str | Path, rows: Iterable[tuple], method: str) -> Path:
    """Per-frame decisions as Parquet (columns: frame, decision, person_present,
    sources (list), boxes (list of [x1, y1, x2, y2]), method). ``rows``: a
    :class:`FrameRows` or rows it takes. ``person_present`` is true where a face, body
    keypoints or person segmentation saw someone, and also where a held region covers the
    frame (the fail-closed side: a held frame is assumed to have its person, and pose is
    not run there), so it can be true on a frame that is empty to the eye."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .io import atomic_output

    rows = rows if isinstance(rows, FrameRows) else FrameRows(rows)
    schema = pa.schema(
        [
            ("frame", pa.int32()),
            ("decision", pa.string()),
            ("person_present", pa.bool_()),
            ("sources", pa.list_(pa.string())),
            ("boxes", pa.list_(pa.list_(pa.float32(), 4))),
            ("method", pa.string()),
        ],
        metadata={b"deid.table": b"frames", b"deid.schema_version": FRAMES_SCHEMA_VERSION.encode()},
    )
    cols = rows.arrow_columns()
    cols["method"] = pa.array([method] * len(rows), pa.string())
    table = pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)
