"""Pieces every pose backend shares: mapping a model's own keypoint list onto
wholebody133, and the output policy (what counts as a found point).

Output policy, the same for every backend so metrics can compare them:

- a point is *found* when its score is > 0; a missing point is exactly ``(0, 0, 0)``
  (COCO's convention), never a stale coordinate with a zero score;
- found points lie inside the frame, ``0 <= x <= W`` and ``0 <= y <= H``. Models happily
  extrapolate limbs beyond the border (MediaPipe put a talking head's shoulders 0.96
  "visible" below a 512 px frame); ground truth made from such a frame could never be
  matched by an annotator, so by default they are dropped. ``keep_outside=True`` keeps
  them (e.g. to place a head box that is cut by the top edge);
- scores are clipped to [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..types import Keypoints, check_frame
from .schema import NUM_KEYPOINTS, SCHEMA_NAME

__all__ = ["to_wholebody", "finalize", "empty", "check_frames", "keypoints_box", "check_extra_kwargs"]

# Keys of ``evaluate.pose`` (deid.config.PoseConfig) that a caller may pass to any backend
# generically; a backend that has no use for them accepts them when they are empty.
_SHARED_CONFIG_KEYS = ("model_path", "det_model_path", "proto_path", "min_score")


def to_wholebody(points: np.ndarray, mapping: Sequence[int] | np.ndarray) -> np.ndarray:
    """Place a model's (P, K, 3) points at wholebody133 indices.

    ``mapping[k]`` is the wholebody133 index of the model's point ``k``, or -1 to drop it
    (e.g. OpenPose's neck). Returns (P, 133, 3) float32, zeros where nothing maps."""
    pts = np.asarray(points, np.float32)
    if pts.ndim == 2:
        pts = pts[None]
    mapping = np.asarray(mapping, np.int64)
    if pts.ndim != 3 or pts.shape[2] != 3 or pts.shape[1] != len(mapping):
        raise ValueError(f"points must be (P, {len(mapping)}, 3) to match the mapping, got {pts.shape}")
    out = np.zeros((pts.shape[0], NUM_KEYPOINTS, 3), np.float32)
    keep = mapping >= 0
    out[:, mapping[keep]] = pts[:, keep]
    return out


def finalize(data: np.ndarray, width: int, height: int, keep_outside: bool = False, min_score: float = 0.0) -> Keypoints:
    """Apply the output policy (module doc) to (P, 133, 3) points of a ``width`` x ``height`` frame."""
    d = np.array(data, dtype=np.float32, copy=True).reshape(-1, NUM_KEYPOINTS, 3)
    s = np.nan_to_num(d[..., 2], nan=0.0)
    s = np.clip(s, 0.0, 1.0)
    bad = ~np.isfinite(d[..., 0]) | ~np.isfinite(d[..., 1]) | (s <= max(0.0, min_score))
    if not keep_outside:
        bad |= (d[..., 0] < 0) | (d[..., 0] > width) | (d[..., 1] < 0) | (d[..., 1] > height)
    d[..., 2] = s
    d[bad] = 0.0
    # a person with no found point at all is not a person
    d = d[(d[..., 2] > 0).any(axis=1)]
    return Keypoints(d, SCHEMA_NAME)


def empty() -> Keypoints:
    return Keypoints.empty(NUM_KEYPOINTS, SCHEMA_NAME)


def check_frames(frames: Sequence[np.ndarray], who: str) -> list[np.ndarray]:
    """Validate a batch (RGB uint8 (H, W, 3) each) with an error naming the backend and frame."""
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        raise TypeError(f"{who}.estimate takes a sequence of frames; wrap a single frame in a list")
    out = []
    for i, f in enumerate(frames):
        out.append(check_frame(f, f"{who}: frame {i} of the batch"))
    return out


def keypoints_box(person: np.ndarray, min_score: float = 0.0, pad: float = 0.0) -> np.ndarray | None:
    """xyxy box around one person's found points ((K, 3)), grown by ``pad`` of its size
    on every side; None with fewer than two points."""
    p = np.asarray(person, np.float32)
    ok = p[:, 2] > min_score
    if ok.sum() < 2:
        return None
    xy = p[ok, :2]
    x1, y1 = xy.min(axis=0)
    x2, y2 = xy.max(axis=0)
    w, h = x2 - x1, y2 - y1
    return np.array([x1 - pad * w, y1 - pad * h, x2 + pad * w, y2 + pad * h], np.float32)


def check_extra_kwargs(kwargs: dict, who: str) -> None:
    """Reject options a backend does not understand (a typo in a config should not be
    silently ignored), except the shared pose-config keys when they carry no value."""
    from ..errors import ConfigError

    unknown = [k for k in kwargs if k not in _SHARED_CONFIG_KEYS]
    given = [k for k in ("model_path", "det_model_path", "proto_path") if kwargs.get(k)]
    if unknown or given:
        raise ConfigError(
            f"{who} does not take option(s) {sorted(unknown + given)}; "
            f"check evaluate.pose / track.pose_backend settings (model paths are for openpose / rtmpose)"
        )
