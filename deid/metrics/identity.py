"""Is anyone still recognisable? Per-face identity distances of a processed video, from
embeddings computed elsewhere (no model calls here: pass ``encoder.distance``).

For every face found in a processed frame we record three distances:

- ``dist_original``: to the original video's face at the same place (best box IoU >=
  ``iou_min`` in the same frame) — "does the face at this spot still look like whoever
  was there?" (catches bystanders too);
- ``dist_patient``: the minimum over the patient's reference embeddings (photos, or the
  original video's faces) — "can this face be linked to the patient?";
- ``dist_target``: the minimum over the target/donor embeddings — for face swap, "does the
  result look like the donor?" (Zhu et al. report both directions).

A face is a *leak* when it is within ``threshold`` of the original face at its place or
of the patient (``match_original | match_patient``). Frames where the processed video
has no face at all are kept as one row with ``face = -1`` and ``found = False`` so that
"no face found" is countable from the table alone. Rows follow the identity table of
:mod:`deid.metrics.schemas`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..geometry import box_iou as _box_iou
from ..identity.base import cosine_distance, euclidean_distance

DistanceFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def resolve_distance(metric: str | DistanceFn) -> DistanceFn:
    """``"euclidean"`` / ``"cosine"`` or a callable ``(N, D), (M, D) -> (N, M)``."""
    if callable(metric):
        return metric
    if metric == "euclidean":
        return euclidean_distance
    if metric == "cosine":
        return cosine_distance
    raise InvalidInputError(f"unknown distance {metric!r}; use 'euclidean', 'cosine' or pass encoder.distance")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) of xyxy boxes; NaN boxes overlap nothing (:func:`deid.geometry.box_iou`)."""
    return _box_iou(a, b)


def _min_dist(dist: DistanceFn, e: np.ndarray, refs: np.ndarray | None) -> np.ndarray:
    """Per row of ``e`` the min distance to any valid reference row; NaN without any."""
    if refs is None:
        return np.full(len(e), np.nan)
    refs = np.asarray(refs, np.float32)
    if refs.ndim == 1:
        refs = refs.reshape(1, -1)
    if len(e) == 0 or refs.size == 0:
        return np.full(len(e), np.nan)
    refs = refs[np.isfinite(refs).all(axis=1)]
    if len(refs) == 0:
        return np.full(len(e), np.nan)
    d = np.asarray(dist(e, refs), np.float64)
    m = np.where(np.isfinite(d), d, np.inf).min(axis=1)
    return np.where(np.isinf(m), np.nan, m)


def _boxes(x, what: str, frame: int) -> np.ndarray:
    arr = np.asarray(x if x is not None else (), np.float32)
    if arr.size == 0:
        return np.zeros((0, 4), np.float32)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InvalidInputError(f"frame {frame}: {what} must have shape (N, 4) xyxy, got {arr.shape}")
    return arr


def _embeddings(x, n: int, what: str, frame: int) -> np.ndarray:
    arr = np.asarray(x if x is not None else (), np.float32)
    if n == 0:
        return np.zeros((0, arr.shape[1] if arr.ndim == 2 else 0), np.float32)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise InvalidInputError(f"frame {frame}: {what} must have shape ({n}, D), one row per box; got {arr.shape}")
    return arr


def identity_rows(
    proc_boxes: Sequence[np.ndarray],
    proc_emb: Sequence[np.ndarray],
    orig_boxes: Sequence[np.ndarray] | None = None,
    orig_emb: Sequence[np.ndarray] | None = None,
    patient_refs: np.ndarray | None = None,
    target_refs: np.ndarray | None = None,
    *,
    distance: str | DistanceFn = "euclidean",
    threshold: float = 0.6,
    iou_min: float = 0.3,
    frames: Sequence[int] | None = None,
    video: str = "",
    method: str = "",
) -> list[dict[str, Any]]:
    """One dict per processed face (or per face-less frame) with the columns of the
    identity table. Inputs are per frame: ``proc_boxes[i]`` (Ni, 4) and
    ``proc_emb[i]`` (Ni, D) for the processed video, the same for the original
    (optional), and reference sets (M, D). ``frames`` gives frame numbers (default
    0..F-1) when only some frames were embedded (``evaluate.identity_every``)."""
    dist = resolve_distance(distance)
    n = len(proc_boxes)
    if len(proc_emb) != n:
        raise InvalidInputError(f"identity_rows: {n} frames of boxes but {len(proc_emb)} of embeddings")
    if orig_boxes is not None and (len(orig_boxes) != n or orig_emb is None or len(orig_emb) != n):
        raise InvalidInputError(
            "identity_rows: original boxes and embeddings must both be given, one entry per processed frame"
        )
    frame_ids = list(range(n)) if frames is None else [int(f) for f in frames]
    if len(frame_ids) != n:
        raise InvalidInputError(f"identity_rows: {len(frame_ids)} frame numbers for {n} frames")
    thr = float(threshold)
    out: list[dict[str, Any]] = []
    for i in range(n):
        fno = frame_ids[i]
        pb = _boxes(proc_boxes[i], "processed boxes", fno)
        pe = _embeddings(proc_emb[i], len(pb), "processed embeddings", fno)
        ob = _boxes(orig_boxes[i], "original boxes", fno) if orig_boxes is not None else np.zeros((0, 4), np.float32)
        oe = _embeddings(orig_emb[i], len(ob), "original embeddings", fno) if orig_emb is not None else None
        base = {"video": video, "method": method, "frame": fno, "orig_faces": int(len(ob))}
        if len(pb) == 0:
            out.append(
                {**base, "face": -1, "found": False, "x1": np.nan, "y1": np.nan, "x2": np.nan, "y2": np.nan,
                 "embedded": False, "iou_original": np.nan, "dist_original": np.nan, "dist_patient": np.nan,
                 "dist_target": np.nan, "match_original": False, "match_patient": False, "match_target": False,
                 "leak": False}
            )
            continue
        d_orig = np.full(len(pb), np.nan)
        iou_best = np.full(len(pb), np.nan)
        if len(ob):
            iou = box_iou(pb, ob)
            j = iou.argmax(axis=1)
            iou_best = iou[np.arange(len(pb)), j]
            if oe is not None and oe.size and pe.size:
                pair = np.diag(np.asarray(dist(pe, oe[j]), np.float64))
                d_orig = np.where(iou_best >= iou_min, pair, np.nan)
        d_pat = _min_dist(dist, pe, patient_refs)
        d_tgt = _min_dist(dist, pe, target_refs)
        embedded = np.isfinite(pe).all(axis=1) if pe.size else np.zeros(len(pb), bool)
        with np.errstate(invalid="ignore"):
            m_orig, m_pat, m_tgt = d_orig < thr, d_pat < thr, d_tgt < thr
        for k in range(len(pb)):
            x1, y1, x2, y2 = (float(v) for v in pb[k])
            out.append(
                {**base, "face": k, "found": True, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                 "embedded": bool(embedded[k]), "iou_original": float(iou_best[k]),
                 "dist_original": float(d_orig[k]), "dist_patient": float(d_pat[k]), "dist_target": float(d_tgt[k]),
                 "match_original": bool(m_orig[k]), "match_patient": bool(m_pat[k]),
                 "match_target": bool(m_tgt[k]), "leak": bool(m_orig[k] or m_pat[k])}
            )
    return out


def summarize_identity(rows: Sequence[dict[str, Any]] | Any) -> dict[str, Any]:
    """Frame and face counts from identity rows (list of dicts or a DataFrame):

    - ``frames``: frames evaluated; ``frames_no_face``: frames where the processed video
      shows no face; ``frames_no_face_orig_had``: of those, frames where the original had one;
    - ``faces``, ``faces_embedded``: faces found / embeddable in the processed video;
    - ``frames_leak`` / ``faces_leak``: still matching the original face at the same place
      or the patient (d < threshold); ``frames_match_patient``, ``frames_match_original``,
      ``frames_match_target`` split that up;
    - ``min_dist_patient``, ``mean_dist_patient``, ``mean_dist_original``,
      ``mean_dist_target`` over embedded faces (NaN when none).
    """
    import pandas as pd

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if df.empty:
        return {"frames": 0, "frames_no_face": 0, "frames_no_face_orig_had": 0, "faces": 0, "faces_embedded": 0,
                "frames_leak": 0, "faces_leak": 0, "frames_match_patient": 0, "frames_match_original": 0,
                "frames_match_target": 0, "min_dist_patient": float("nan"), "mean_dist_patient": float("nan"),
                "mean_dist_original": float("nan"), "mean_dist_target": float("nan")}
    by_frame = df.groupby(["video", "method", "frame"], sort=False) if "video" in df else df.groupby("frame", sort=False)
    per = by_frame.agg(
        found=("found", "any"),
        orig=("orig_faces", "max"),
        leak=("leak", "any"),
        mp=("match_patient", "any"),
        mo=("match_original", "any"),
        mt=("match_target", "any"),
    )
    faces = df[df["found"]]

    def _stat(col, fn):
        v = faces[col].astype(float)
        v = v[np.isfinite(v)]
        return float(fn(v)) if len(v) else float("nan")

    return {
        "frames": int(len(per)),
        "frames_no_face": int((~per["found"]).sum()),
        "frames_no_face_orig_had": int(((~per["found"]) & (per["orig"] > 0)).sum()),
        "faces": int(len(faces)),
        "faces_embedded": int(faces["embedded"].sum()),
        "frames_leak": int(per["leak"].sum()),
        "faces_leak": int(faces["leak"].sum()),
        "frames_match_patient": int(per["mp"].sum()),
        "frames_match_original": int(per["mo"].sum()),
        "frames_match_target": int(per["mt"].sum()),
        "min_dist_patient": _stat("dist_patient", np.min),
        "mean_dist_patient": _stat("dist_patient", np.mean),
        "mean_dist_original": _stat("dist_original", np.mean),
        "mean_dist_target": _stat("dist_target", np.mean),
    }
