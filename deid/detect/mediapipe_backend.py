"""MediaPipe face detection (BlazeFace), the default detector.

MediaPipe ships two models inside the package: the short-range model (faces within
~2 m, large in the frame) and the full-range model (faces up to ~5 m). On real clips
they miss *different* faces (on the pancake clip the short-range model fired in 178
frames, the full-range one in 52), so by default both run and their boxes are merged
with NMS: a face missed by the detector is a leak, and recall comes first. The
full-range model costs ~3x the short-range one, so it runs on frames where the
short-range model found nothing and on every ``full_range_every``-th frame.

Boxes from BlazeFace are tight around the eyes-mouth area; the tracker pads them to
cover the whole head (hair, ears, chin).
"""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from ..types import Detections
from .base import clip_boxes, concat, nms, resize_for_detection

_MODELS = {"short": 0, "full": 1}


class MediapipeFaceDetector:
    name = "mediapipe"

    def __init__(
        self,
        min_score: float = 0.4,
        max_side: int = 640,
        models: Sequence[str] | str = ("short", "full"),
        full_range_every: int = 4,
    ):
        import mediapipe as mp  # heavy; imported when a detector is built

        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        bad = [m for m in models if m not in _MODELS]
        if bad or not models:
            from ..errors import ConfigError

            raise ConfigError(f"mediapipe detector models must be among {sorted(_MODELS)}; got {list(models)}")
        self.min_score = float(min_score)
        self.max_side = int(max_side)
        self.models = tuple(models)
        from .._quiet import native_stderr_silenced

        with native_stderr_silenced():  # TFLite/absl start-up lines on fd 2
            self._fd = [
                mp.solutions.face_detection.FaceDetection(model_selection=_MODELS[m], min_detection_confidence=self.min_score)
                for m in self.models
            ]
            for fd in self._fd:
                fd.process(np.zeros((64, 64, 3), np.uint8))
        self._lock = threading.Lock()  # a MediaPipe graph is not re-entrant
        # With both models: the full-range model (3x the cost) runs where the short-range
        # one found nothing, and on every ``full_range_every``-th frame regardless, so small
        # or distant faces beside a close one are still found (the tracker carries them
        # across the frames in between). 1 = every frame.
        self.full_range_every = max(1, int(full_range_every))
        self._n = 0

    def _one(self, fd, img: np.ndarray, w: int, h: int) -> Detections:
        res = fd.process(img)
        if not res.detections:
            return Detections.empty()
        boxes, scores, lms = [], [], []
        for d in res.detections:
            rb = d.location_data.relative_bounding_box
            boxes.append([rb.xmin * w, rb.ymin * h, (rb.xmin + rb.width) * w, (rb.ymin + rb.height) * h])
            scores.append(d.score[0] if d.score else 0.0)
            kp = d.location_data.relative_keypoints
            # MediaPipe order: right eye, left eye, nose tip, mouth centre, right ear, left ear
            # (the subject's right eye appears on the image left)
            pts = np.full((5, 2), np.nan, np.float32)
            if len(kp) >= 3:
                pts[0] = (kp[0].x * w, kp[0].y * h)
                pts[1] = (kp[1].x * w, kp[1].y * h)
                pts[2] = (kp[2].x * w, kp[2].y * h)
            lms.append(pts)
        b = clip_boxes(np.asarray(boxes, np.float32), w, h)
        ok = (b[:, 2] - b[:, 0] > 1) & (b[:, 3] - b[:, 1] > 1)
        return Detections(b, np.asarray(scores, np.float32), np.asarray(lms, np.float32)).filter(ok)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        return self.detect_indexed(frames, range(self._n, self._n + len(frames)))

    def detect_indexed(self, frames: Sequence[np.ndarray], indices: Sequence[int]) -> list[Detections]:
        """``detect`` for frames numbered ``indices`` in the video: the full-range model's
        every-k-th-frame cadence follows those numbers."""
        out = []
        with self._lock:
            for frame, n in zip(frames, indices):
                self._n = int(n)
                h, w = frame.shape[:2]
                img, s = resize_for_detection(frame, self.max_side)
                img = np.ascontiguousarray(img)
                if len(self._fd) == 1:
                    out.append(self._one(self._fd[0], img, w, h))
                else:
                    first = self._one(self._fd[0], img, w, h)
                    parts = [first]
                    if not len(first) or self._n % self.full_range_every == 0:
                        parts += [self._one(fd, img, w, h) for fd in self._fd[1:]]
                    out.append(nms(concat(parts), 0.4))
                self._n += 1
        return out

    def reset(self) -> None:
        self._n = 0

    def close(self) -> None:
        for fd in self._fd:
            fd.close()
        self._fd = []
