"""dlib face detectors: HOG + linear SVM (fast, frontal) and the MMOD CNN shipped in
``face_recognition_models`` (slower on CPU, more pose-tolerant)."""

from __future__ import annotations

import os
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


def auto_threads(limit: int = 2) -> int:
    """Threads for work that runs outside the GIL: up to ``limit``, no more than the CPUs
    this process may use (its CPU affinity, and ``OMP_NUM_THREADS``, which Ray sets to a
    task's or actor's ``num_cpus``)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        omp = int(os.environ.get("OMP_NUM_THREADS", "") or 0)
    except ValueError:
        omp = 0
    if omp > 0:
        n = min(n, omp)
    return max(1, min(int(limit), n))


class DlibHogDetector:
    """dlib's HOG + linear SVM frontal face detector (the paper's attacker, upsample 1).

    ``threads``: dlib releases the GIL while it detects, so a batch of frames can be split
    over several threads, each with a detector of its own; the results come back in frame
    order and equal one detector's. 1 (default) = the calling thread only; 0 = automatic
    (:func:`auto_threads`: two where the process may use two CPUs)."""

    name = "dlib_hog"

    def __init__(self, min_score: float = 0.0, max_side: int = 960, upsample: int = 1, threads: int = 1):
        import dlib

        threads = int(threads)
        if threads < 0:
            from ..errors import ConfigError

            raise ConfigError(f"dlib_hog threads must be >= 0 (0 = automatic), got {threads}")
        self.threads = auto_threads() if threads == 0 else threads
        self._dets = [dlib.get_frontal_face_detector() for _ in range(self.threads)]
        # HOG scores are SVM margins (~ -1..3), not probabilities; min_score is used as the
        # adjust_threshold offset only when negative (more recall), else 0.
        self.adjust = min(0.0, float(min_score)) if min_score < 0 else 0.0
        self.max_side = int(max_side)
        self.upsample = int(upsample)
        self._lock = threading.Lock()
        self._pool = None
        self._pool_pid = 0

    def _run(self, det, frames: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        for frame in frames:
            h, w = frame.shape[:2]
            img, s = resize_for_detection(frame, self.max_side)
            rects, scores, _ = det.run(np.ascontiguousarray(img), self.upsample, self.adjust)
            b = clip_boxes(_rects_to_boxes(rects, s), w, h)
            # map SVM margin to (0, 1) so scores are comparable across backends
            sc = 1.0 / (1.0 + np.exp(-np.asarray(scores, np.float32) * 2.0)) if len(scores) else np.zeros(0, np.float32)
            out.append(Detections(b, sc.astype(np.float32), None))
        return out

    def _executor(self):
        # a forked child inherits the pool object but not its threads: it builds its own
        if self._pool is None or self._pool_pid != os.getpid():
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=len(self._dets) - 1, thread_name_prefix="deid-hog")
            self._pool_pid = os.getpid()
        return self._pool

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        frames = list(frames)
        with self._lock:
            if len(self._dets) == 1 or len(frames) < 2:
                return self._run(self._dets[0], frames)
            parts = [p for p in np.array_split(np.arange(len(frames)), len(self._dets)) if len(p)]
            pool = self._executor()
            jobs = [pool.submit(self._run, d, [frames[i] for i in p]) for d, p in zip(self._dets[1:], parts[1:])]
            out = self._run(self._dets[0], [frames[i] for i in parts[0]])
            for j in jobs:
                out += j.result()
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
                dets = self._det(_pad_to_min(np.ascontiguousarray(img)), self.upsample)
                keep = [d for d in dets if d.confidence >= self.min_score]
                b = clip_boxes(_rects_to_boxes([d.rect for d in keep], s), w, h)
                sc = np.asarray([min(1.0, max(0.0, d.confidence)) for d in keep], np.float32)
                out.append(Detections(b, sc, None))
        return out


#: dlib's MMOD network needs its filter windows to fit the (pyramid-tiled) input: on an
#: image under ~12 pixels on a side it raises from inside the convolution, and after a few
#: such errors the process's heap was corrupted here (glibc abort). Smaller images are
#: padded to this size with black on the right / bottom (boxes stay in image coordinates).
_CNN_MIN_SIDE = 32


def _pad_to_min(img: np.ndarray, side: int = _CNN_MIN_SIDE) -> np.ndarray:
    h, w = img.shape[:2]
    if h >= side and w >= side:
        return img
    out = np.zeros((max(h, side), max(w, side)) + img.shape[2:], img.dtype)
    out[:h, :w] = img
    return out
