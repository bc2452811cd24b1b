"""Draw wholebody133 skeletons on frames (for the report's frame strips and debugging).

Returns a new frame; the input is never edited. Sizes scale with the frame so a strip of
thumbnails and a full-HD frame both stay readable.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..types import Keypoints, check_frame
from .schema import NUM_KEYPOINTS, SKELETON

__all__ = ["draw_skeleton", "PART_COLORS"]

# RGB per skeleton part (colour-blind-friendly Okabe-Ito palette).
PART_COLORS: dict[str, tuple[int, int, int]] = {
    "body": (0, 114, 178),
    "feet": (86, 180, 233),
    "face": (240, 228, 66),
    "left_hand": (0, 158, 115),
    "right_hand": (213, 94, 0),
}


def _as_persons(keypoints: Keypoints | np.ndarray) -> np.ndarray:
    d = keypoints.data if isinstance(keypoints, Keypoints) else np.asarray(keypoints, np.float32)
    if d.ndim == 2:
        d = d[None]
    if d.ndim != 3 or d.shape[2] != 3:
        raise ValueError(f"keypoints must be (P, K, 3) or (K, 3), got {d.shape}")
    if d.shape[1] != NUM_KEYPOINTS:
        raise ValueError(f"draw_skeleton draws wholebody133 keypoints (K=133), got K={d.shape[1]}")
    return d


def draw_skeleton(
    frame: np.ndarray,
    keypoints: Keypoints | np.ndarray,
    color: tuple[int, int, int] | None = None,
    min_score: float = 0.3,
    parts: Sequence[str] | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """Draw every person's skeleton onto a copy of ``frame`` (RGB uint8).

    ``color`` (RGB) paints everything one colour (e.g. original vs processed in one
    image); None colours by part. Points and edges with a score below ``min_score`` are
    skipped. ``parts`` limits drawing to some of body/feet/face/left_hand/right_hand."""
    check_frame(frame, "draw_skeleton frame")
    persons = _as_persons(keypoints)
    out = frame.copy()
    h, w = out.shape[:2]
    t = int(thickness) if thickness else max(1, round(min(h, w) / 250))
    r_body, r_small = t + 1, max(1, t)
    parts = list(SKELETON) if parts is None else list(parts)
    for p in persons:
        ok = p[:, 2] >= min_score
        xy = np.round(p[:, :2]).astype(np.int32)
        for part in parts:
            c = tuple(int(v) for v in (color if color is not None else PART_COLORS[part]))
            small = part in ("face", "left_hand", "right_hand")
            for a, b in SKELETON[part]:
                if ok[a] and ok[b]:
                    cv2.line(out, tuple(xy[a]), tuple(xy[b]), c, max(1, t - 1) if small else t, cv2.LINE_AA)
            idx = {i for e in SKELETON[part] for i in e}
            for i in sorted(idx):
                if ok[i]:
                    cv2.circle(out, tuple(xy[i]), r_small if small else r_body, c, -1, cv2.LINE_AA)
    return out
