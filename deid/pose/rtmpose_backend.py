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
  download them).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, ModelWeightsError
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
        k = outs[0].shape[1] if len(outs[0].shape) == 3 else None
        if isinstance(k, int) and k not in KEYPOINT_MAPS:
            raise ModelWeightsError(f"{model!r} predicts {k} keypoints; supported: {sorted(KEYPOINT_MAPS)}")

        self._det = None
        self._mp = None
        if person_boxes == "yolox":
            from rtmlib import YOLOX

            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    self._det = YOLOX(det, model_input_size=tuple(int(v) for v in det_input_size),
                                      score_thr=float(det_score), backend="onnxruntime", device=device)
                except Exception as e:  # noqa: BLE001
                    raise ModelWeightsError(f"onnxruntime could not load the YOLOX model {det!r}: {e}") from e
        elif person_boxes == "mediapipe":
            from .mediapipe_backend import MediapipePoseEstimator

            self._mp = MediapipePoseEstimator(keep_outside=True)
        self.model_path, self.det_model_path = model, det
        self.person_boxes = person_boxes
        self.keep_outside = bool(keep_outside)
        self._lock = threading.Lock()

    # -- person boxes
    def boxes(self, frame: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy person boxes for one RGB frame, from the configured source."""
        h, w = frame.shape[:2]
        if self.person_boxes == "frame":
            return np.array([[0, 0, w, h]], np.float32)
        if self._det is not None:
            b = np.asarray(self._det(np.ascontiguousarray(frame[..., ::-1])), np.float32).reshape(-1, 4)
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
                xy, scores = self._pose(np.ascontiguousarray(f), bboxes=[list(map(float, b)) for b in boxes])
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
