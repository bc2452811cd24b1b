"""SCRFD (InsightFace) face detector from a user-supplied ONNX file (optional).

Weights cannot be downloaded here: point ``detect.model_path`` (or ``DEID_SCRFD_MODEL``)
at e.g. ``det_10g.onnx`` from InsightFace's buffalo_l pack. Pre/post-processing is
InsightFace's own (``insightface.model_zoo``); this adapter only converts colour order,
boxes and the 5 landmarks (already in InsightFace's order)."""

from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np

from .._ort import accept_half_precision
from ..errors import ModelWeightsError, one_line
from ..types import Detections
from .base import clip_boxes


class ScrfdDetector:
    name = "scrfd"

    def __init__(self, model_path: str = "", min_score: float = 0.5, max_side: int = 640, input_size: int = 640, **_: object):
        path = model_path or os.environ.get("DEID_SCRFD_MODEL", "")
        if not path or not os.path.isfile(path):
            raise ModelWeightsError(
                f"SCRFD model file not found ({path or 'unset'}); download det_10g.onnx (InsightFace) yourself and set "
                "detect.model_path or DEID_SCRFD_MODEL"
            )
        from insightface.model_zoo import get_model

        try:
            m = get_model(path, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnx / onnxruntime raise many types for a bad file
            raise ModelWeightsError(f"{path}: cannot be loaded as an ONNX model ({type(e).__name__}: {str(e)[:200]}); "
                                    "check detect.model_path or DEID_SCRFD_MODEL") from None
        if m is None or not hasattr(m, "detect"):
            raise ModelWeightsError(f"{path}: not recognised as an SCRFD detector by insightface.model_zoo; "
                                    "check detect.model_path or DEID_SCRFD_MODEL")
        accept_half_precision(m)  # a float16 export: cast around its session
        m.prepare(ctx_id=-1, input_size=(input_size, input_size), det_thresh=float(min_score))
        self._m = m
        self.model_path = path
        self._lock = threading.Lock()

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        with self._lock:
            for frame in frames:
                h, w = frame.shape[:2]
                bgr = np.ascontiguousarray(frame[:, :, ::-1])
                try:
                    dets, kps = self._m.detect(bgr, max_num=0)
                except Exception as e:  # noqa: BLE001 - onnxruntime, or InsightFace decoding outputs of another shape
                    msg = one_line(e)
                    raise ModelWeightsError(f"SCRFD model {self.model_path} failed on a frame ({type(e).__name__}: "
                                            f"{msg}); check detect.model_path or DEID_SCRFD_MODEL") from None
                if dets is None or len(dets) == 0:
                    out.append(Detections.empty())
                    continue
                b = clip_boxes(dets[:, :4], w, h)
                lm = None if kps is None else np.asarray(kps, np.float32).reshape(-1, 5, 2)
                out.append(Detections(b, dets[:, 4].astype(np.float32), lm))
        return out
