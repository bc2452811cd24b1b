"""RTMPose (Jiang et al., "RTMPose: Real-Time Multi-Person Pose Estimation based on
MMPose", 2023) and its whole-body variants (RTMW, DWPose) through ``rtmlib``.

rtmlib's ``RTMPose`` does the top-down part: crop each person box with mmpose's affine
(box padded 1.25x, fixed aspect), run the ONNX model with onnxruntime, decode the SimCC
vectors (argmax / split ratio 2.0) and map back to the frame. It is used as is. This
module adds what rtmlib leaves to the caller:

- where the person boxes come from (``person_boxes``): rtmlib's YOLOX when a detector
  model is given; else MediaPipe pose's keypoints (one person, tracked in video mode);
  or ``"frame"`` = the whole frame as one box (for crops of a single person);
- colour order: the frames here are RGB, and RTMPose models were trained with mmpose's
  ``bgr_to_rgb=True`` and RGB means (123.675, 116.28, 103.53), so RGB goes in as is;
  YOLOX (mmdet) was trained on BGR, so the detector gets BGR;
- the output mapped onto wholebody133 by the model's keypoint count: 17 (COCO body),
  26 (Halpe-26: COCO + head/neck/hip + 6 foot points) or 133 (COCO-WholeBody: RTMW,
  DWPose, RTMPose-wholebody);
- missing weights as :class:`~deid.errors.ModelWeightsError` (rtmlib would otherwise try to
  download them), as are files of the wrong kind (checked at load) and a model failing on a
  frame;
- the person detector's input size from its file where the export fixes it (rtmlib's own
  YOLOX-tiny is 416 x 416; rtmlib assumes 640 x 640).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, ModelWeightsError, one_line
from ..types import Keypoints
from .base import check_extra_kwargs, check_frames, empty, finalize, keypoints_box, to_wholebody
from .schema import NUM_KEYPOINTS

__all__ = ["RTMPoseEstimator", "KEYPOINT_MAPS"]

ENV_MODEL = "DEID_RTMPOSE_MODEL"
ENV_DET_MODEL = "DEID_RTMPOSE_DET_MODEL"

# Halpe-26 (Halpe-FullBody / AlphaPose): COCO-17, then 17 head, 18 neck, 19 hip,
# 20 l_big_toe, 21 r_big_toe, 22 l_small_toe, 23 r_small_toe, 24 l_heel, 25 r_heel.
_HALPE26 = list(range(17)) + [-1, -1, -1, 17, 20, 18, 21, 19, 22]

#: model keypoint count -> wholebody133 index of each model keypoint
KEYPOINT_MAPS: dict[int, tuple[int, ...]] = {
    17: tuple(range(17)),
    26: tuple(_HALPE26),
    133: tuple(range(NUM_KEYPOINTS)),
}

_BOX_SOURCES = ("auto", "yolox", "mediapipe", "frame")


def _require_file(path: str, what: str, env: str, key: str) -> str:
    where = (f"set {env}=/path/to/model.onnx (used wherever it runs: the tracker's pose fallback, "
             f"track.pose_backend, and the evaluation), or {key} (the evaluation only); deid never downloads model weights")
    if not path:
        raise ModelWeightsError(f"no {what} given: {where}")
    if not Path(path).is_file():
        raise ModelWeightsError(f"{what} not found: {path!r}; {where}")
    return path


def _check_yolox(det, path: str) -> int:
    """Fit rtmlib's YOLOX to the model file: the input size an export fixes (rtmlib's own
    lightweight YOLOX-tiny is 416 x 416; rtmlib would feed it 640 x 640 and onnxruntime
    fail on the first frame), and an output rtmlib can decode: (1, N, 5) boxes + score
    from an export with NMS, or (1, anchors, 5 + classes) raw, one row per anchor of
    strides 8, 16 and 32. Anything else is one :class:`ModelWeightsError` at load.

    Returns the number of classes of a raw export (0 for one with NMS, whose boxes are
    people already): rtmlib keeps a raw export's boxes of *every* class (a COCO-80 YOLOX
    would make chairs and cars "people"), so :meth:`RTMPoseEstimator.boxes` keeps class 0
    (person) itself."""
    where = f"check {ENV_DET_MODEL} or evaluate.pose.det_model_path (a YOLOX person detector .onnx)"
    inp = det.session.get_inputs()[0].shape
    if len(inp) != 4 or (isinstance(inp[1], int) and inp[1] != 3):
        raise ModelWeightsError(f"{path!r} takes input {list(inp)}; a YOLOX detector takes (1, 3, H, W); {where}")
    if all(isinstance(v, int) and v > 0 for v in inp[2:]):
        det.model_input_size = (int(inp[2]), int(inp[3]))  # rtmlib's YOLOX: (h, w)
    out = det.session.get_outputs()[0].shape
    last = out[-1] if len(out) == 3 else None
    ok = isinstance(last, int) and last >= 5
    if ok and last > 5 and isinstance(out[1], int):
        h, w = det.model_input_size[:2]
        ok = out[1] == sum((h // s) * (w // s) for s in (8, 16, 32))
    if not ok:
        raise ModelWeightsError(
            f"{path!r} outputs {list(out)}; a YOLOX detector outputs (1, N, 5) boxes with scores (exported with NMS, "
            f"as rtmlib's) or (1, anchors, 5 + classes) for its {det.model_input_size[0]}x{det.model_input_size[1]} input; {where}"
        )
    classes = int(last) - 5 if last > 5 else 0
    if classes > 1:
        det.det_mode = "multiclass"  # (boxes, class ids): RTMPoseEstimator.boxes keeps the people
    return classes


class RTMPoseEstimator:
    """Top-down multi-person keypoints from a user-supplied RTMPose / RTMW ONNX model."""

    name = "rtmpose"

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        det_model_path: str | os.PathLike | None = None,
        input_size: Sequence[int] = (192, 256),
        person_boxes: str = "auto",
        det_input_size: Sequence[int] = (640, 640),
        det_score: float = 0.5,
        device: str = "cpu",
        keep_outside: bool = False,
        **kwargs: object,
    ):
        kwargs.pop("min_score", None)  # evaluate.pose.min_score is the metrics' visibility threshold
        check_extra_kwargs(kwargs, "RTMPoseEstimator")
        model = _require_file(str(model_path or os.environ.get(ENV_MODEL, "")), "RTMPose model", ENV_MODEL,
                              "evaluate.pose.model_path")
        det = str(det_model_path or os.environ.get(ENV_DET_MODEL, ""))
        if person_boxes not in _BOX_SOURCES:
            raise ConfigError(f"rtmpose person_boxes must be one of {_BOX_SOURCES}, got {person_boxes!r}")
        if person_boxes == "auto":
            person_boxes = "yolox" if det else "mediapipe"
        if person_boxes == "yolox":
            det = _require_file(det, "RTMPose person detector (YOLOX)", ENV_DET_MODEL, "evaluate.pose.det_model_path")

        from rtmlib import RTMPose

        self.input_size = (int(input_size[0]), int(input_size[1]))  # (w, h)
        with contextlib.redirect_stdout(io.StringIO()):  # rtmlib prints "load ... with onnxruntime backend"
            try:
                self._pose = RTMPose(model, model_input_size=self.input_size, backend="onnxruntime", device=device)
            except Exception as e:  # noqa: BLE001 - onnxruntime raises several types for bad files
                raise ModelWeightsError(f"onnxruntime could not load the RTMPose model {model!r} ({type(e).__name__}: "
                                        f"{str(e)[:200]}); check {ENV_MODEL} or evaluate.pose.model_path") from None
        shape = self._pose.session.get_inputs()[0].shape
        if len(shape) == 4 and all(isinstance(v, int) for v in shape[2:]):
            # the exported model fixes its input size; it wins over the argument
            self.input_size = (int(shape[3]), int(shape[2]))
            self._pose.model_input_size = self.input_size
        outs = self._pose.session.get_outputs()
        if len(outs) != 2:
            raise ModelWeightsError(
                f"{model!r} has {len(outs)} outputs; an RTMPose SimCC export has two (simcc_x, simcc_y)"
            )
        if any(len(o.shape) != 3 for o in outs):
            raise ModelWeightsError(
                f"{model!r} outputs shapes {[list(o.shape) for o in outs]}; an RTMPose SimCC export has two 3-D "
                "outputs (1, K, 2W) and (1, K, 2H); check DEID_RTMPOSE_MODEL or evaluate.pose.model_path"
            )
        k = outs[0].shape[1]
        if isinstance(k, int) and k not in KEYPOINT_MAPS:
            raise ModelWeightsError(f"{model!r} predicts {k} keypoints; supported: {sorted(KEYPOINT_MAPS)}")

        self._det = None
        self._det_classes = 0
        self._mp = None
        if person_boxes == "yolox":
            from rtmlib import YOLOX

            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    self._det = YOLOX(det, model_input_size=tuple(int(v) for v in det_input_size),
                                      score_thr=float(det_score), backend="onnxruntime", device=device)
                except Exception as e:  # noqa: BLE001
                    raise ModelWeightsError(f"onnxruntime could not load the YOLOX model {det!r} ({type(e).__name__}: "
                                            f"{str(e)[:200]}); check {ENV_DET_MODEL} or evaluate.pose.det_model_path") from None
            self._det_classes = _check_yolox(self._det, det)
        elif person_boxes == "mediapipe":
            from .mediapipe_backend import MediapipePoseEstimator

            self._mp = MediapipePoseEstimator(keep_outside=True)
        self.model_path, self.det_model_path = model, det
        self.person_boxes = person_boxes
        self.keep_outside = bool(keep_outside)
        self._lock = threading.Lock()

    def _failed(self, what: str, path: str, e: Exception) -> ModelWeightsError:
        env, key = (ENV_DET_MODEL, "evaluate.pose.det_model_path") if what == "YOLOX" else (ENV_MODEL, "evaluate.pose.model_path")
        msg = one_line(e)
        return ModelWeightsError(f"the {what} model {path!r} failed on a frame ({type(e).__name__}: {msg}); "
                                 f"check {env} or {key}")

    # -- person boxes
    def boxes(self, frame: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy person boxes for one RGB frame, from the configured source."""
        h, w = frame.shape[:2]
        if self.person_boxes == "frame":
            return np.array([[0, 0, w, h]], np.float32)
        if self._det is not None:
            try:
                found = self._det(np.ascontiguousarray(frame[..., ::-1]))
                if self._det_classes > 1:  # a raw multi-class export: people only (COCO class 0)
                    found, cls = found
                    found = np.asarray(found, np.float32).reshape(-1, 4)[np.asarray(cls).reshape(-1) == 0]
                b = np.asarray(found, np.float32).reshape(-1, 4)
            except Exception as e:  # noqa: BLE001 - onnxruntime / rtmlib's decoding on a model of another shape
                raise self._failed("YOLOX", self.det_model_path, e) from None
        else:
            b = np.zeros((0, 4), np.float32)
            kp = self._mp.estimate([frame])[0]
            for person in kp.data:
                box = keypoints_box(person[:23], min_score=0.3, pad=0.1)
                if box is not None:
                    b = np.vstack([b, box[None]])
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
        return b[(b[:, 2] - b[:, 0] > 2) & (b[:, 3] - b[:, 1] > 2)]

    def estimate(self, frames: Sequence[np.ndarray]) -> list[Keypoints]:
        frames = check_frames(frames, "RTMPoseEstimator")
        out = []
        with self._lock:
            for f in frames:
                boxes = self.boxes(f)
                if len(boxes) == 0:
                    out.append(empty())
                    continue
                try:
                    xy, scores = self._pose(np.ascontiguousarray(f), bboxes=[list(map(float, b)) for b in boxes])
                except Exception as e:  # noqa: BLE001 - onnxruntime / rtmlib's decoding on a model of another shape
                    raise self._failed("RTMPose", self.model_path, e) from None
                xy = np.asarray(xy, np.float32).reshape(len(boxes), -1, 2)
                scores = np.asarray(scores, np.float32).reshape(len(boxes), -1)
                mapping = KEYPOINT_MAPS.get(xy.shape[1])
                if mapping is None:
                    raise ModelWeightsError(
                        f"{self.model_path!r} predicts {xy.shape[1]} keypoints; supported: {sorted(KEYPOINT_MAPS)}"
                    )
                pts = np.concatenate([xy, scores[..., None]], axis=2)
                out.append(finalize(to_wholebody(pts, mapping), f.shape[1], f.shape[0], self.keep_outside))
        return out

    def reset(self) -> None:
        """Forget the MediaPipe box tracker's state (the pose model itself is stateless)."""
        if self._mp is not None:
            self._mp.reset()
