"""Shared machinery for region anonymizers: integer ROIs, cached soft masks, blending.

Every anonymizer returns a *new* frame and only touches pixels inside the regions it is
given (plus the feathered rim inside those regions)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import wraps
from typing import Callable, Sequence

import cv2
import numpy as np

from ..types import FaceRegion, check_frame


def roi(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Integer pixel rectangle covering ``box`` (rounded outwards), clipped; None if empty."""
    x1 = max(0, int(np.floor(box[0])))
    y1 = max(0, int(np.floor(box[1])))
    x2 = min(width, int(np.ceil(box[2])))
    y2 = min(height, int(np.ceil(box[3])))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return x1, y1, x2, y2


def _cached_masks(max_bytes: int) -> Callable:
    """Least-recently-used cache of masks bounded by their total size, not their count:
    regions change size from frame to frame, and on a 4K close-up each mask is tens of
    MB (a count-bounded cache grew by ~26 MB a frame there)."""

    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        store: OrderedDict[tuple, np.ndarray] = OrderedDict()
        used = [0]
        lock = threading.Lock()

        @wraps(fn)
        def get(*key):
            with lock:
                hit = store.get(key)
                if hit is not None:
                    store.move_to_end(key)
                    return hit
            m = fn(*key)
            m.setflags(write=False)  # shared between calls
            with lock:
                if key not in store and m.nbytes <= max_bytes:
                    store[key] = m
                    used[0] += m.nbytes
                    while used[0] > max_bytes:
                        _, old = store.popitem(last=False)
                        used[0] -= old.nbytes
            return m

        get.cache_bytes = lambda: used[0]  # type: ignore[attr-defined]
        return get

    return deco


@_cached_masks(64 << 20)
def soft_mask(w: int, h: int, shape: str, feather: float) -> np.ndarray:
    """(h, w, 1) float32 alpha for a region of w x h pixels.

    The shape (an ellipse inscribed in the ROI, or the ROI itself) is 1 in its interior
    and falls off smoothly to 0 over the outer ``feather`` fraction of its radius, so the
    interior is fully covered and only the rim is blended with the original pixels."""
    ys = (np.arange(h, dtype=np.float32) + 0.5) / h * 2.0 - 1.0
    xs = (np.arange(w, dtype=np.float32) + 0.5) / w * 2.0 - 1.0
    u, v = np.meshgrid(xs, ys)
    r = np.maximum(np.abs(u), np.abs(v)) if shape == "box" else np.sqrt(u * u + v * v)
    if feather <= 0:
        m = (r <= 1.0).astype(np.float32)
    else:
        f = min(0.95, 2.0 * float(feather))  # feather is a fraction of the size; r runs over the half-size
        t = np.clip((1.0 - r) / f, 0.0, 1.0)
        m = t * t * (3.0 - 2.0 * t)  # smoothstep
    return m.astype(np.float32)[:, :, None]


def blend(dst: np.ndarray, src: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """alpha * src + (1 - alpha) * dst, uint8 (alpha: (h, w, 1) float32 in [0, 1])."""
    a = np.ascontiguousarray(alpha[:, :, 0], dtype=np.float32)
    return cv2.blendLinear(np.ascontiguousarray(src), np.ascontiguousarray(dst), a, 1.0 - a)


@_cached_masks(32 << 20)
def hard_mask(w: int, h: int, shape: str) -> np.ndarray:
    """(h, w, 1) bool: the shape with a hard edge (mask and pixelate need no blending)."""
    return soft_mask(w, h, shape, 0.0) > 0.5


class RegionAnonymizer:
    """Base class: subclasses implement ``_render(patch) -> patch`` for one ROI."""

    name = "region"
    shape = "ellipse"
    feather = 0.0

    def _render(self, patch: np.ndarray, full: tuple[int, int]) -> np.ndarray:  # pragma: no cover - abstract
        """The anonymized ``patch``; ``full`` = (w, h) of the whole region it belongs to
        (larger than the patch when the region reaches past the frame edge)."""
        raise NotImplementedError

    def apply(self, frame: np.ndarray, faces: Sequence[FaceRegion]) -> np.ndarray:
        check_frame(frame)
        out = frame.copy()
        h, w = frame.shape[:2]
        for face in faces:
            r = roi(face.box, w, h)
            if r is None:
                continue
            x1, y1, x2, y2 = r
            # the shape is laid out on the whole region (``full_box``: the head before it
            # was clipped to the frame) and cut to the visible part
            fx1, fy1, fx2, fy2 = _outer(face.full_box, r, w, h)
            fw, fh = fx2 - fx1, fy2 - fy1
            sl = (slice(y1 - fy1, y2 - fy1), slice(x1 - fx1, x2 - fx1))
            patch = out[y1:y2, x1:x2]
            rendered = self._render(patch, (fw, fh))
            if self.feather > 0:
                out[y1:y2, x1:x2] = blend(patch, rendered, soft_mask(fw, fh, self.shape, self.feather)[sl])
            elif self.shape == "box":
                out[y1:y2, x1:x2] = rendered
            else:
                np.copyto(patch, rendered, where=hard_mask(fw, fh, self.shape)[sl])
        return out


def _outer(full_box: np.ndarray | None, r: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """Integer rectangle of the whole region, containing the visible ROI ``r``; at most
    one frame size past each edge (a mask larger than that changes nothing visible)."""
    if full_box is None:
        return r
    b = np.asarray(full_box, np.float64)
    fx1 = max(-width, min(r[0], int(np.floor(b[0]))))
    fy1 = max(-height, min(r[1], int(np.floor(b[1]))))
    fx2 = min(2 * width, max(r[2], int(np.ceil(b[2]))))
    fy2 = min(2 * height, max(r[3], int(np.ceil(b[3]))))
    return fx1, fy1, fx2, fy2


def redact_frame(frame: np.ndarray, color: tuple[int, int, int] = (128, 128, 128)) -> np.ndarray:
    """The fail-closed fallback: a frame with nothing left to identify."""
    out = np.empty_like(frame)
    out[:] = np.asarray(color, np.uint8)
    return out


def fixed_rects(regions: Sequence[Sequence[float]], width: int, height: int) -> list[tuple[int, int, int, int]]:
    """``anonymize.fixed_regions`` (fractions of the frame) as pixel rectangles
    ``(x0, y0, x1, y1)`` of a ``width`` x ``height`` frame, rounded outwards (a region
    never covers less than asked) and clipped."""
    out = []
    for x0, y0, x1, y1 in regions:
        r = roi(np.array([x0 * width, y0 * height, x1 * width, y1 * height], np.float64), width, height)
        if r is not None:
            out.append(r)
    return out


def fill_fixed(frame: np.ndarray, regions: Sequence[Sequence[float]], color: tuple[int, int, int]) -> np.ndarray:
    """``frame`` with the fixed regions (fractions, :func:`fixed_rects`) filled with
    ``color``: in place where ``frame`` is writeable (an anonymizer's output, a new array
    by the anonymizers' contract, module doc: no second copy of every frame), in a copy where
    it is read-only."""
    if not len(regions):
        return frame
    h, w = frame.shape[:2]
    out = frame if frame.flags.writeable else frame.copy()
    c = np.asarray(color, np.uint8)
    for x0, y0, x1, y1 in fixed_rects(regions, w, h):
        out[y0:y1, x0:x1] = c
    return out


Renderer = Callable[[np.ndarray], np.ndarray]
