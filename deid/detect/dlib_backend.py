"""dlib face detectors: HOG + linear SVM (fast, frontal) and the MMOD CNN shipped in
``face_recognition_models`` (slower on CPU, more pose-tolerant)."""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from ..errors import ModelWeightsError
from ..types import Detections
from .base import clip_boxes, resize_for_detection


def _model_file(name: str) -> str:
    try:
        import face_recognition_models as frm
    except ImportError as e:  # pragma: no cover - in the pin set
        raise ModelWeightsError(f"face_recognition_models is not installed ({e}); pip install face_recognition_models==0.3.0") from None
    getter = {
        "cnn": frm.cnn_face_detector_model_location,
        "sp5": frm.pose_predictor_five_point_model_location,
        "sp68": frm.pose_predictor_model_location,
        "resnet": frm.face_recognition_model_location,
    }[name]
    return getter()


def _rects_to_boxes(rects, scale: float) -> np.ndarray:
    if not len(rects):
        return np.zeros((0, 4), np.float32)
    return np.asarray([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float32) / scale


class DlibHogDetector:
    name = "dlib_hog"

    def __init__(self, min_score: float = 0.0, max_side: int = 960, upsample: int = 1):
        import dlib

        self._det = dlib.get_frontal_face_detector()
        # HOG scores are SVM margins (~ -1..3), not probabilities; min_score is used as the
        # adjust_threshold offset only when negative (more recall), else 0.
        self.adjust = min(0.0, float(min_score)) if min_score < 0 else 0.0
        self.max_side = int(max_side)
        self.upsample = int(upsample)
        self._lock = threading.Lock()

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        with self._lock:
            for frame in frames:
                h, w = frame.shape[:2]
                img, s = resize_for_detection(frame, self.max_side)
                rects, scores, _ = self._det.run(np.ascontiguousarray(img), self.upsample, self.adjust)
                b = clip_boxes(_rects_to_boxes(rects, s), w, h)
                # map SVM margin to (0, 1) so scores are comparable across backends
                sc = 1.0 / (1.0 + np.exp(-np.asarray(scores, np.float32) * 2.0)) if len(scores) else np.zeros(0, np.float32)
                out.append(Detections(b, sc.astype(np.float32), None))
        return out


class DlibCnnDetector:
    name = "dlib_cnn"

    def __init__(self, min_score: float = 0.0, max_side: int = 640, upsample: int = 0, model_path: str = ""):
        import dlib

        path = model_path or _model_file("cnn")
        try:
            self._det = dlib.cnn_face_detection_model_v1(path)
        except RuntimeError as e:
            raise ModelWeightsError(f"{path}: cannot load dlib MMOD model ({e})") from None
        self.min_score = float(min_score)
        self.max_side = int(max_side)
        self.upsample = int(upsample)
        self._lock = threading.Lock()

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        with self._lock:
            for frame in frames:
                h, w = frame.shape[:2]
                img, s = resize_for_detection(frame, self.max_side)
                dets = self._det(np.ascontiguousarray(img), self.upsample)
                keep = [d for d in dets if d.confidence >= self.min_score]
                b = clip_boxes(_rects_to_boxes([d.rect for d in keep], s), w, h)
                sc = np.asarray([min(1.0, max(0.0, d.confidence)) for d in keep], np.float32)
                out.append(Detections(b, sc, None))
        return out
