"""Every pose backend that can be built here passes the same protocol checks.

OpenPose and RTMPose run their real code paths on tiny ONNX stand-ins (deid.pose.testing);
the MediaPipe backends run their real models. Frames "with people" are synthetic for the
stand-ins and real photos (../shared/media) for MediaPipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

from deid.protocols import PoseEstimator
from deid.registry import POSE_ESTIMATORS
from deid.types import Keypoints

from conftest import media_path

OP_FRAME = (184, 240)  # (h, w): the tiny OpenPose's fixed 368 x 480 input at input_height=368


def _openpose(tmp_path):
    pytest.importorskip("onnx")
    from deid.pose.openpose_backend import COCO_18
    from deid.pose.testing import openpose_maps, write_openpose_onnx

    # two people in map cells (60 x 46 map): part index (COCO order) -> (x, y)
    base = {0: (14, 9), 1: (14, 13), 2: (11, 13), 5: (17, 13), 3: (10, 19), 6: (18, 19), 4: (9, 25), 7: (19, 25),
            8: (12, 26), 11: (16, 26), 9: (12, 33), 12: (16, 33), 10: (12, 40), 13: (16, 40), 14: (13, 8),
            15: (15, 8), 16: (12, 9), 17: (16, 9)}
    people = [base, {j: (x + 25, y + 2) for j, (x, y) in base.items()}]
    path = write_openpose_onnx(tmp_path / "op.onnx", openpose_maps(people, COCO_18, (46, 60)))
    return POSE_ESTIMATORS.create("openpose", model_path=str(path), input_height=368)


def _rtmpose(tmp_path):
    pytest.importorskip("onnx")
    from deid.pose.testing import write_rtmpose_onnx

    sx = np.zeros((1, 17, 384), np.float32)
    sy = np.zeros((1, 17, 512), np.float32)
    for k in range(17):
        sx[0, k, 60 + 15 * k] = 0.8
        sy[0, k, 160 + 11 * k] = 0.8
    path = write_rtmpose_onnx(tmp_path / "rtm.onnx", sx, sy)
    return POSE_ESTIMATORS.create("rtmpose", model_path=str(path), person_boxes="frame")


def _textured(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _media_frames():
    import cv2

    img = cv2.imread(str(media_path("pose/COCO_val2014_000000000241.jpg")))[..., ::-1]
    return [np.ascontiguousarray(img), np.ascontiguousarray(img[40:, 10:-30])]


@dataclass
class Case:
    name: str
    build: Callable
    frames: Callable  # () -> frames with at least one person
    size: tuple[int, int] | None = None  # fixed (h, w) for models with a fixed input


CASES = [
    pytest.param(Case("mediapipe_holistic", lambda tp: POSE_ESTIMATORS.create("mediapipe_holistic", static=True),
                      _media_frames), id="mediapipe_holistic"),
    pytest.param(Case("mediapipe_pose", lambda tp: POSE_ESTIMATORS.create("mediapipe_pose", static=True),
                      _media_frames), id="mediapipe_pose"),
    pytest.param(Case("openpose", _openpose, lambda: [_textured(*OP_FRAME, s) for s in (1, 2)], OP_FRAME), id="openpose"),
    pytest.param(Case("rtmpose", _rtmpose, lambda: [_textured(240, 320, 1), _textured(300, 200, 2)]), id="rtmpose"),
]


@pytest.fixture(params=CASES)
def case(request, tmp_path):
    c: Case = request.param
    est = c.build(tmp_path)
    yield c, est
    close = getattr(est, "close", None)
    if close:
        close()


def test_protocol_and_name(case):
    c, est = case
    assert isinstance(est, PoseEstimator)
    assert est.name == c.name


def test_empty_batch(case):
    _, est = case
    assert est.estimate([]) == []


def test_blank_frame_has_nobody(case):
    c, est = case
    h, w = c.size or (240, 320)
    for value in (0, 128):
        (kp,) = est.estimate([np.full((h, w, 3), value, np.uint8)])
        assert isinstance(kp, Keypoints) and kp.schema == "wholebody133"
        assert kp.data.shape == (0, 133, 3) and kp.data.dtype == np.float32


def test_bad_input_is_rejected(case):
    c, est = case
    h, w = c.size or (64, 64)
    with pytest.raises(ValueError, match="frame 0.*RGB uint8"):
        est.estimate([np.zeros((h, w, 3), np.float32)])
    with pytest.raises(TypeError, match="sequence of frames"):
        est.estimate(np.zeros((h, w, 3), np.uint8))


def test_outputs_follow_the_schema(case):
    c, est = case
    frames = c.frames()
    out = est.estimate(frames)
    assert len(out) == len(frames)
    assert any(k.num_persons > 0 for k in out), "the frames used here contain people"
    for f, kp in zip(frames, out):
        h, w = f.shape[:2]
        d = kp.data
        assert kp.schema == "wholebody133" and d.dtype == np.float32 and d.ndim == 3 and d.shape[1:] == (133, 3)
        found = d[..., 2] > 0
        assert np.all(d[..., 2] <= 1.0)
        assert np.all(d[~found] == 0), "a missing point is exactly (0, 0, 0)"
        assert np.all((d[found][:, 0] >= 0) & (d[found][:, 0] <= w)), "x within the frame"
        assert np.all((d[found][:, 1] >= 0) & (d[found][:, 1] <= h)), "y within the frame"
        assert np.all(found.any(axis=1)), "every reported person has a point"
    # stateless across reset: the same frame gives the same answer after a reset
    est.reset()
    again = est.estimate(frames[:1])[0]
    assert again.num_persons == out[0].num_persons
