"""RTMPose backend through rtmlib + onnxruntime, on tiny ONNX models with RTMPose's
signature whose SimCC outputs peak at known bins; the expected frame coordinates are
computed here from mmpose's top-down conventions, not by calling rtmlib."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from deid.errors import ConfigError, ModelWeightsError
from deid.pose import schema
from deid.pose.rtmpose_backend import KEYPOINT_MAPS, RTMPoseEstimator
from deid.pose.testing import write_rtmpose_onnx, write_yolox_onnx

IN_W, IN_H = 192, 256  # RTMPose-m body input (w, h)
SPLIT = 2.0  # SimCC bins per input pixel


def simcc(bins_x, bins_y, val_x=0.9, val_y=0.7):
    """One-hot-ish SimCC vectors peaking at the given bins (-1: an all-zero row = missing)."""
    K = len(bins_x)
    sx = np.zeros((1, K, int(IN_W * SPLIT)), np.float32)
    sy = np.zeros((1, K, int(IN_H * SPLIT)), np.float32)
    for k, (bx, by) in enumerate(zip(bins_x, bins_y)):
        if bx >= 0:
            sx[0, k, bx] = val_x
            sx[0, k, bx - 1] = val_x / 3  # a neighbour bin, lower: argmax stays put
            sy[0, k, by] = val_y
    return sx, sy


def expected_xy(box, bx, by):
    """mmpose top-down decoding: box -> centre and size x1.25, size widened or heightened to
    the input aspect (w/h = 192/256); a SimCC bin b is input pixel b / 2, and input pixel u
    maps to centre - size/2 + u / input_size * size."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = (x2 - x1) * 1.25, (y2 - y1) * 1.25
    aspect = IN_W / IN_H
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    u, v = bx / SPLIT, by / SPLIT
    return cx - w / 2 + u / IN_W * w, cy - h / 2 + v / IN_H * h


def textured(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


BINS_X = [40 + 17 * k for k in range(17)]
BINS_Y = [150 + 12 * k for k in range(17)]


@pytest.fixture()
def coco17_model(tmp_path):
    bx, by = list(BINS_X), list(BINS_Y)
    bx[16] = by[16] = -1  # right ankle: no response -> missing
    bx[15] = 4  # left ankle: decodes left of the frame -> dropped unless keep_outside
    return write_rtmpose_onnx(tmp_path / "rtmpose17.onnx", *simcc(bx, by), input_size=(IN_W, IN_H)), bx, by


def test_whole_frame_box_decodes_where_mmpose_puts_it(coco17_model):
    path, bx, by = coco17_model
    H, W = 240, 320
    est = RTMPoseEstimator(path, person_boxes="frame")
    assert est.input_size == (IN_W, IN_H)
    (kp,) = est.estimate([textured(H, W)])
    assert kp.schema == "wholebody133" and kp.data.shape == (1, 133, 3)
    d = kp.data[0]
    for k in range(15):
        ex, ey = expected_xy((0, 0, W, H), bx[k], by[k])
        assert d[k, 0] == pytest.approx(ex, abs=1e-3) and d[k, 1] == pytest.approx(ey, abs=1e-3), schema.SCHEMA[k].name
        assert d[k, 2] == pytest.approx((0.9 + 0.7) / 2)  # rtmlib: mean of the two axes' maxima
    assert np.all(d[15:] == 0)  # out-of-frame ankle, silent ankle, and nothing beyond COCO-17
    keep = RTMPoseEstimator(path, person_boxes="frame", keep_outside=True).estimate([textured(H, W)])[0].data[0]
    ex, _ = expected_xy((0, 0, W, H), bx[15], by[15])
    assert ex < 0 and keep[15, 0] == pytest.approx(ex, abs=1e-3) and keep[15, 2] > 0
    assert keep[16, 2] == 0


def test_detector_boxes_one_person_each(tmp_path, coco17_model):
    """Two YOLOX boxes (in the detector's 640x640 letterboxed input) -> two people, each
    decoded relative to its own box mapped back to frame pixels."""
    path, bx, by = coco17_model
    H, W = 240, 320  # letterbox ratio min(640/240, 640/320) = 2
    dets = np.array([[20, 40, 220, 400, 0.95], [300, 60, 560, 460, 0.9]], np.float32)
    det = write_yolox_onnx(tmp_path / "yolox.onnx", dets)
    est = RTMPoseEstimator(path, det_model_path=det)
    assert est.person_boxes == "yolox"
    boxes = est.boxes(textured(H, W))
    np.testing.assert_allclose(boxes, dets[:, :4] / 2.0, atol=1e-4)
    (kp,) = est.estimate([textured(H, W)])
    assert kp.num_persons == 2
    for person, box in zip(kp.data, boxes):
        for k in range(15):
            ex, ey = expected_xy(box, bx[k], by[k])
            if 0 <= ex <= W and 0 <= ey <= H:
                assert person[k, :2] == pytest.approx((ex, ey), abs=1e-3)
            else:
                assert person[k, 2] == 0


@pytest.mark.parametrize("K", [26, 133])
def test_keypoint_count_selects_the_mapping(tmp_path, K):
    bx = [60 + (k * 7) % 240 for k in range(K)]
    by = [160 + (k * 5) % 200 for k in range(K)]
    path = write_rtmpose_onnx(tmp_path / f"m{K}.onnx", *simcc(bx, by), input_size=(IN_W, IN_H))
    (kp,) = RTMPoseEstimator(path, person_boxes="frame").estimate([textured(240, 320)])
    d = kp.data[0]
    mapping = KEYPOINT_MAPS[K]
    for k in range(K):
        ex, ey = expected_xy((0, 0, 320, 240), bx[k], by[k])
        if mapping[k] < 0:
            continue
        assert d[mapping[k], :2] == pytest.approx((ex, ey), abs=1e-3)
    if K == 26:  # Halpe-26: 24 = left heel, 21 = right big toe
        assert mapping[24] == schema.index_of("left_heel") and mapping[21] == schema.index_of("right_big_toe")
        assert int((d[:, 2] > 0).sum()) == 23  # head / neck / hip have no wholebody133 counterpart


def test_a_detector_with_a_fixed_smaller_input_gets_that_size(tmp_path, coco17_model):
    """rtmlib's own lightweight person detector (YOLOX-tiny) is exported at 416 x 416: the
    boxes come from a 416 letterbox, not a 640 one onnxruntime refuses on the first frame."""
    H, W = 240, 320  # letterbox ratio min(416/240, 416/320) = 1.3
    dets = np.array([[26, 52, 208, 286, 0.9]], np.float32)
    det = write_yolox_onnx(tmp_path / "yolox_tiny.onnx", dets, input_size=(416, 416))
    est = RTMPoseEstimator(coco17_model[0], det_model_path=det)
    np.testing.assert_allclose(est.boxes(textured(H, W)), dets[:, :4] / 1.3, atol=1e-3)
    assert est.estimate([textured(H, W)])[0].num_persons == 1


def test_models_of_the_wrong_kind_are_one_error_at_load(tmp_path, coco17_model):
    """An RTMPose file given as the person detector, a detector's or a 2-D-output model
    given as RTMPose: a ModelWeightsError naming the file and the setting when the model is
    built, not an onnxruntime / unpacking traceback from the first frame."""
    from onnx import TensorProto, helper

    from deid.testing import ONNX_OPSET, save_onnx

    path = coco17_model[0]
    with pytest.raises(ModelWeightsError, match="rtmpose17.onnx.*YOLOX.*DEID_RTMPOSE_DET_MODEL"):
        RTMPoseEstimator(path, det_model_path=path)
    flat = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["simcc_x"], keepdims=0, axes=[2, 3]),
         helper.make_node("ReduceMean", ["input"], ["simcc_y"], keepdims=0, axes=[2, 3])],
        "flat", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, IN_H, IN_W])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, 3]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, 3])])
    bad = save_onnx(helper.make_model(flat, opset_imports=[helper.make_opsetid("", ONNX_OPSET)]), tmp_path / "flat.onnx")
    with pytest.raises(ModelWeightsError, match="flat.onnx.*3-D.*DEID_RTMPOSE_MODEL"):
        RTMPoseEstimator(bad, person_boxes="frame")


def test_a_model_failing_on_a_frame_is_one_error(tmp_path, coco17_model, monkeypatch):
    est = RTMPoseEstimator(coco17_model[0], person_boxes="frame")

    def boom(*a, **k):
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :\n Got invalid dimensions")

    monkeypatch.setattr(est, "_pose", boom)
    with pytest.raises(ModelWeightsError, match="rtmpose17.onnx.*failed on a frame.*INVALID_ARGUMENT : Got") as e:
        est.estimate([textured(64, 64)])
    assert "\n" not in str(e.value)


def test_unsupported_keypoint_count(tmp_path):
    path = write_rtmpose_onnx(tmp_path / "m21.onnx", *simcc([50] * 21, [200] * 21), input_size=(IN_W, IN_H))
    with pytest.raises(ModelWeightsError, match="21 keypoints"):
        RTMPoseEstimator(path, person_boxes="frame")


def test_missing_files_say_where_to_put_them(tmp_path, monkeypatch, coco17_model):
    monkeypatch.delenv("DEID_RTMPOSE_MODEL", raising=False)
    monkeypatch.delenv("DEID_RTMPOSE_DET_MODEL", raising=False)
    with pytest.raises(ModelWeightsError, match="DEID_RTMPOSE_MODEL.*evaluate.pose.model_path"):
        RTMPoseEstimator()
    with pytest.raises(ModelWeightsError, match="not found"):
        RTMPoseEstimator(tmp_path / "nope.onnx")
    with pytest.raises(ModelWeightsError, match="DEID_RTMPOSE_DET_MODEL"):
        RTMPoseEstimator(coco17_model[0], person_boxes="yolox")
    with pytest.raises(ConfigError, match="person_boxes"):
        RTMPoseEstimator(coco17_model[0], person_boxes="everyone")


@pytest.mark.media
def test_mediapipe_boxes_by_default(coco17_model):
    """Without a detector model the person box comes from MediaPipe pose: one box around
    the person's body points, and nobody on a blank frame."""
    import cv2

    from conftest import media_path

    img = np.ascontiguousarray(cv2.imread(str(media_path("pose/COCO_val2014_000000000241.jpg")))[..., ::-1])
    est = RTMPoseEstimator(coco17_model[0])
    assert est.person_boxes == "mediapipe"
    (box,) = est.boxes(img)
    x1, y1, x2, y2 = box
    assert 0 <= x1 < x2 <= img.shape[1] and 0 <= y1 < y2 <= img.shape[0]
    assert (x2 - x1) * (y2 - y1) > 0.05 * img.shape[0] * img.shape[1]  # a person, not a speck
    est.reset()  # MediaPipe tracks in video mode: start again so estimate() sees the same box
    (kp,) = est.estimate([img])
    assert kp.num_persons == 1
    inside = 0
    for k in range(15):
        ex, ey = expected_xy(box, coco17_model[1][k], coco17_model[2][k])
        if 0 <= ex <= img.shape[1] and 0 <= ey <= img.shape[0]:
            inside += 1
            assert kp.data[0, k, :2] == pytest.approx((ex, ey), abs=1e-3)
        else:
            assert kp.data[0, k, 2] == 0
    assert inside >= 5
    est.reset()
    assert est.estimate([np.zeros((240, 320, 3), np.uint8)])[0].num_persons == 0


def test_multi_person_pose_checks_in_the_tracker(tmp_path, coco17_model, monkeypatch):
    """track.pose_backend=rtmpose with the user's RTMPose + YOLOX files (here: tiny ONNX
    models with their signatures): the pose check on a frame whose one face was found
    places the head of the *second* person, which MediaPipe's single-person pose cannot."""
    import dataclasses

    from deid.config import Config
    from deid.pipeline import Components
    from deid.track.analyzer import FrameAnalyzer
    from deid.track.boxes import head_box_from_keypoints
    from test_keyframes import ScriptedDetector

    path, _, _ = coco17_model
    dets = np.array([[20, 40, 220, 400, 0.95], [300, 60, 560, 460, 0.9]], np.float32)
    monkeypatch.setenv("DEID_RTMPOSE_MODEL", str(path))
    monkeypatch.setenv("DEID_RTMPOSE_DET_MODEL", str(write_yolox_onnx(tmp_path / "yolox.onnx", dets)))
    cfg = Config().replace("track.pose_backend=rtmpose", "audit.leak_check=false")
    comp = Components.build(cfg, [])
    assert isinstance(comp.pose, RTMPoseEstimator) and comp.pose.person_boxes == "yolox" and comp.pose.keep_outside

    frame = textured(240, 320)
    frame[0, 0, :2] = 0  # frame number 0 for the scripted detector (a pose-check frame)
    heads = [head_box_from_keypoints(p, cfg.track.pose_min_score) for p in comp.pose.estimate([frame])[0].data]
    assert len(heads) == 2 and all(h is not None for h in heads)
    cx, cy = (heads[0][0] + heads[0][2]) / 2, (heads[0][1] + heads[0][3]) / 2
    det = ScriptedDetector({0: [[cx - 4, cy - 4, cx + 4, cy + 4]]})  # person 1's face found, person 2's missed
    an = FrameAnalyzer(det, dataclasses.replace(cfg.track, worker_threads=False), comp.pose, None)
    an.reset()
    obs = an.analyze([frame], 0) + an.finish()
    an.close()
    (o,) = [o for o in obs if o.index == 0]
    assert len(o.faces) == 1 and len(o.head_boxes) == 1
    np.testing.assert_allclose(o.head_boxes[0], heads[1], atol=1e-3)  # the second person's head


def test_the_evaluation_names_where_the_person_boxes_came_from(tmp_path, coco17_model):
    """RTMPose's numbers depend on its person detector as much as on itself: run.json, the
    printed table and the report name both (the YOLOX file, or MediaPipe's boxes)."""
    from deid.evaluate.models import pose_info

    det = write_yolox_onnx(tmp_path / "yolox_m_humanart.onnx", np.array([[20, 40, 220, 400, 0.95]], np.float32))
    info = pose_info("rtmpose", RTMPoseEstimator(coco17_model[0], det_model_path=det))
    assert info["model"] == "rtmpose17.onnx, person boxes: YOLOX yolox_m_humanart.onnx"
    assert pose_info("rtmpose", RTMPoseEstimator(coco17_model[0], person_boxes="frame"))["model"].endswith("the whole frame")


def test_the_tracker_without_a_person_detector_keeps_the_further_people_search(coco17_model, monkeypatch, caplog):
    """track.pose_backend=rtmpose with DEID_RTMPOSE_MODEL but no DEID_RTMPOSE_DET_MODEL:
    RTMPose then sees MediaPipe's one person a frame, so the search for further people
    (which only ran for the mediapipe backends) must run as with the default, and the
    user is told that the detector is missing; with a detector it is not needed."""
    from deid.config import Config
    from deid.pipeline import Components

    monkeypatch.setenv("DEID_RTMPOSE_MODEL", str(coco17_model[0]))
    monkeypatch.delenv("DEID_RTMPOSE_DET_MODEL", raising=False)
    cfg = Config().replace("track.pose_backend=rtmpose", "audit.leak_check=false")
    with caplog.at_level("WARNING", logger="deid.pipeline"):
        comp = Components.build(cfg, [])
    assert comp.pose.person_boxes == "mediapipe"
    assert comp.more_people is not None
    assert "without a person detector (DEID_RTMPOSE_DET_MODEL)" in caplog.text


def test_a_raw_multi_class_detector_gives_people_only(tmp_path, coco17_model):
    """A COCO-80 YOLOX exported without NMS: rtmlib keeps every class's boxes, so a chair
    (class 56) became a "person" to pose; only class 0 is a person box."""
    from deid.pose.testing import write_yolox_raw_onnx

    det = write_yolox_raw_onnx(tmp_path / "yolox_s_coco.onnx", [(32, 5, 5, 4, 8, 0), (32, 14, 5, 4, 4, 56)])
    est = RTMPoseEstimator(coco17_model[0], det_model_path=det)
    # a 640 x 640 frame: no letterbox; the person at cell (5, 5) of stride 32, 4 x 8 cells
    np.testing.assert_allclose(est.boxes(textured(640, 640)), [[112, 48, 240, 304]], atol=1e-3)
    only = write_yolox_raw_onnx(tmp_path / "yolox_person.onnx", [(32, 5, 5, 4, 8, 0)], classes=1)
    np.testing.assert_allclose(RTMPoseEstimator(coco17_model[0], det_model_path=only).boxes(textured(640, 640)),
                               [[112, 48, 240, 304]], atol=1e-3)
