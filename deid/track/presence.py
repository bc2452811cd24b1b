"""Is a person in the frame at all? The fail-closed backstop when neither the face
detector nor the pose model placed a head.

Uses MediaPipe's selfie-segmentation model (ships in the package, ~3 ms a frame): a
frame counts as having a person when enough pixels are person-like. This errs on the
side of "present" (privacy first); the cost of a false positive is a redacted frame."""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from ..detect.base import resize_for_detection


class SegmentationPresence:
    name = "mediapipe_selfie_segmentation"

    def __init__(self, min_fraction: float = 0.03, threshold: float = 0.5, max_side: int = 256):
        import mediapipe as mp

        from .._quiet import native_stderr_silenced

        with native_stderr_silenced():
            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
            self._seg.process(np.zeros((64, 64, 3), np.uint8))
        self.min_fraction = float(min_fraction)
        self.threshold = float(threshold)
        self.max_side = int(max_side)
        self._lock = threading.Lock()

    def fractions(self, frames: Sequence[np.ndarray]) -> list[float]:
        out = []
        with self._lock:
            for f in frames:
                img, _ = resize_for_detection(f, self.max_side)
                m = self._seg.process(np.ascontiguousarray(img)).segmentation_mask
                out.append(float(np.mean(m > self.threshold)) if m is not None else 0.0)
        return out

    def present(self, frames: Sequence[np.ndarray]) -> list[bool]:
        return [fr >= self.min_fraction for fr in self.fractions(frames)]
