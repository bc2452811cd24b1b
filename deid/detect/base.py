"""Helpers shared by detector backends: resizing, non-maximum suppression, building."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Sequence

import cv2
import numpy as np

from ..registry import DETECTORS
from ..types import Detections


def resize_for_detection(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale so the longest side is at most ``max_side``; returns (image, scale)
    where original_coords = detection_coords / scale."""
    h, w = frame.shape[:2]
    s = min(1.0, float(max_side) / max(h, w))
    if s >= 1.0:
        return frame, 1.0
    img = cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return img, s


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) of xyxy boxes, float32 (see :func:`deid.geometry.box_iou`)."""
    from ..geometry import box_iou as _iou

    return _iou(a, b).astype(np.float32)


def nms(det: Detections, iou_threshold: float = 0.4) -> Detections:
    """Greedy NMS keeping the highest score; for merging several models' outputs."""
    if len(det) <= 1:
        return det
    order = np.argsort(-det.scores)
    keep: list[int] = []
    iou = box_iou(det.boxes, det.boxes)
    suppressed = np.zeros(len(det), bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= iou[i] > iou_threshold
    return det.filter(np.asarray(keep, np.int64))


def concat(dets: list[Detections]) -> Detections:
    dets = [d for d in dets if len(d)]
    if not dets:
        return Detections.empty()
    lms = None
    if all(d.landmarks is not None for d in dets):
        lms = np.concatenate([d.landmarks for d in dets])
    elif any(d.landmarks is not None for d in dets):
        lms = np.concatenate(
            [d.landmarks if d.landmarks is not None else np.full((len(d), 5, 2), np.nan, np.float32) for d in dets]
        )
    return Detections(np.concatenate([d.boxes for d in dets]), np.concatenate([d.scores for d in dets]), lms)


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    b = np.asarray(boxes, np.float32).copy().reshape(-1, 4)
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height)
    return b


class CompositeDetector:
    """Several detectors as one: the first runs on every frame, each further one on every
    ``every``-th frame of the video (counted across calls; ``reset()`` per video); the
    boxes are merged with NMS. Expensive detectors with better recall on hard faces
    (small, turned away) run sparsely and the tracker carries their faces across the
    frames between."""

    def __init__(self, members: list[tuple[Any, int]], iou: float = 0.4, large: tuple[int, int] | None = None):
        """``large`` = (side, every): on frames whose longer side exceeds ``side`` the
        further members run on every ``every``-th frame when that is more often than their
        own (0: no change)."""
        if not members:
            raise ValueError("CompositeDetector needs at least one member")
        self.members = [(d, max(1, int(k))) for d, k in members]
        self.iou = float(iou)
        self.large = (int(large[0]), int(large[1])) if large and int(large[1]) > 0 else None
        self.name = "+".join(getattr(d, "name", type(d).__name__) for d, _ in self.members)
        self._n = 0
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[tuple[int, int], Future] = {}  # (member, frame number) -> its detections

    def prefetch(self, frames: Sequence[np.ndarray], indices: Sequence[int]) -> None:
        """Start the sparse members on their frames among ``frames`` in a worker thread,
        so they run while the caller works on the first member; ``detect_indexed`` on
        those frames then collects the results. Call only for frames that will be
        detected next (each result is held until it is collected, or ``reset()``)."""
        for m, (det, every) in enumerate(self.members[1:], 1):
            for f, i in zip(frames, indices):
                i = int(i)
                if i % self._every(every, f) == 0 and (m, i) not in self._ahead:
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deid-detect")
                    self._ahead[(m, i)] = self._pool.submit(_detect_one, det, f, i)

    def _every(self, every: int, frame: np.ndarray) -> int:
        if self.large is not None and max(frame.shape[:2]) > self.large[0]:
            return min(every, self.large[1])  # more often on a large frame, never less
        return every

    def reset(self) -> None:
        self._n = 0
        self._drop_ahead()
        for d, _ in self.members:
            if hasattr(d, "reset"):
                d.reset()

    def close(self) -> None:
        """Stop the prefetch worker (a later ``prefetch`` starts a new one)."""
        self._drop_ahead()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _drop_ahead(self) -> None:
        for fut in self._ahead.values():
            fut.cancel() or fut.exception()  # wait for a running one: the model is not re-entrant
        self._ahead.clear()

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        frames = list(frames)
        return self.detect_indexed(frames, range(self._n, self._n + len(frames)))

    def detect_indexed(self, frames: Sequence[np.ndarray], indices: Sequence[int]) -> list[Detections]:
        """``detect`` for frames whose numbers in the video are known: the sparse members
        run on frames numbered a multiple of their ``every`` (so their cadence is the same
        whichever frames the caller skips, and in a segment as in the whole video)."""
        frames, indices = list(frames), [int(i) for i in indices]
        base = detect_indexed(self.members[0][0], frames, indices)
        parts: list[list[Detections]] = [[d] for d in base]
        for m, (det, every) in enumerate(self.members[1:], 1):
            idx = [i for i in range(len(frames)) if indices[i] % self._every(every, frames[i]) == 0]
            now = [i for i in idx if (m, indices[i]) not in self._ahead]
            found = dict(zip(now, detect_indexed(det, [frames[i] for i in now], [indices[i] for i in now]))) if now else {}
            for i in idx:
                d = found[i] if i in found else self._ahead.pop((m, indices[i])).result()
                parts[i].append(d)
        self._n = (indices[-1] + 1) if indices else self._n
        return [nms(concat(p), self.iou) if len(p) > 1 else p[0] for p in parts]


def _detect_one(detector: Any, frame: np.ndarray, index: int) -> Detections:
    (d,) = detect_indexed(detector, [frame], [index])
    return d


def detect_indexed(detector: Any, frames: Sequence[np.ndarray], indices: Sequence[int]) -> list[Detections]:
    """``detector.detect_indexed(frames, indices)`` where the backend schedules work by
    frame number, else ``detector.detect(frames)``."""
    if hasattr(detector, "detect_indexed"):
        return detector.detect_indexed(frames, indices)
    return detector.detect(frames)


def build_detector(cfg: Any = None, name: str | None = None, **kw: Any):
    """Build the detector named in ``cfg.detect`` (a :class:`deid.config.Config` or its
    ``detect`` section) or by ``name``."""
    d = getattr(cfg, "detect", cfg)
    if name is None:
        name = d.backend if d is not None else "mediapipe"
    if d is not None:
        kw.setdefault("min_score", d.min_score)
        kw.setdefault("max_side", d.max_side)
        if name.startswith("dlib"):
            kw.setdefault("upsample", d.upsample)
        if name == "scrfd":
            kw.setdefault("model_path", d.model_path)
        if name == "mediapipe":
            kw.setdefault("models", d.mediapipe_models)
            kw.setdefault("full_range_every", d.full_range_every)
    primary = DETECTORS.create(name, **kw)
    extras = [e.strip() for e in (getattr(d, "extra", "") or "").split(",") if e.strip()] if d is not None else []
    if not extras:
        return primary
    members = [(primary, 1)]
    for e in extras:
        ekw: dict[str, Any] = {"min_score": d.extra_min_score, "max_side": d.max_side}
        members.append((DETECTORS.create(e, **ekw), d.extra_every))
    return CompositeDetector(members, large=(d.max_side, getattr(d, "extra_every_large", 0)))
