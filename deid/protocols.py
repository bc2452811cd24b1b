"""The four interfaces every backend implements. Small, typed, batch-first.

Backends register under a name in :mod:`deid.registry` so configs can say
``detect: {backend: mediapipe}`` or ``pose: mediapipe_holistic``.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .types import Detections, FaceRegion, Keypoints


@runtime_checkable
class FaceDetector(Protocol):
    """Find faces. One :class:`Detections` per input frame, same order."""

    name: str

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]: ...


@runtime_checkable
class PoseEstimator(Protocol):
    """Find people's keypoints. One :class:`Keypoints` per frame, mapped onto the
    project's keypoint schema (:mod:`deid.pose.schema`), missing points with score 0.

    ``reset()`` forgets temporal state (call it between videos / segments)."""

    name: str

    def estimate(self, frames: Sequence[np.ndarray]) -> list[Keypoints]: ...

    def reset(self) -> None: ...


@runtime_checkable
class IdentityEncoder(Protocol):
    """Embed faces. ``boxes[i]`` is an (Ni, 4) xyxy array for ``frames[i]``; the result
    is one (Ni, D) float32 array per frame. Rows for faces that cannot be embedded
    (e.g. no landmarks found) are NaN.

    ``distance(a, b)`` is the backend's metric ((N, D), (M, D) -> (N, M));
    ``threshold`` is the distance under which two faces are the same person."""

    name: str
    dim: int
    threshold: float

    def embed(self, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Anonymizer(Protocol):
    """Hide the faces in one frame. Returns a new frame (never edits ``frame`` in place)
    of the same shape and dtype."""

    name: str

    def apply(self, frame: np.ndarray, faces: Sequence[FaceRegion]) -> np.ndarray: ...
