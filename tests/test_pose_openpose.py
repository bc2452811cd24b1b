"""OpenPose backend: the parser (peaks, PAF scoring, multi-person assembly) run through
the real backend (cv2.dnn loading a tiny ONNX with OpenPose's signature) on maps made
here from two known people."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from deid.errors import ModelWeightsError
from deid.pose import schema
from deid.pose.openpose_backend import (
    BODY_25,
    COCO_18,
    OpenPoseEstimator,
    assemble_people,
    find_peaks,
    layout_for_channels,
    score_limb,
)
from deid.pose.testing import openpose_maps, write_openpose_onnx

# OpenPose's part names in network order (openpose/src/openpose/pose/poseParameters.cpp).
BODY25_PARTS = [
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
    "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
    "right_small_toe", "right_heel",
]
COCO_PARTS = [
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye",
    "right_ear", "left_ear",
]

# One person facing the camera (their right side on the image left), frame pixels of a
# 240 x 184 frame; the second person is the same shifted right and down.
PERSON = {
    "nose": (60, 40), "neck": (60, 58), "right_shoulder": (45, 60), "left_shoulder": (75, 60),
    "right_elbow": (40, 85), "left_elbow": (80, 85), "right_wrist": (38, 108), "left_wrist": (84, 108),
    "mid_hip": (60, 110), "right_hip": (52, 110), "left_hip": (68, 110), "right_knee": (52, 140),
    "left_knee": (68, 140), "right_ankle": (52, 168), "left_ankle": (68, 168), "right_eye": (56, 36),
    "left_eye": (64, 36), "right_ear": (51, 40), "left_ear": (69, 40), "left_big_toe": (73, 176),
    "left_small_toe": (78, 175), "left_heel": (66, 174), "right_big_toe": (47, 176), "right_small_toe": (42, 175),
    "right_heel": (54, 174),
}
SHIFT = (95.0, 3.0)
FRAME_W, FRAME_H = 240, 184
NET_H = 368  # -> scale 2, network input 480 x 368, output 60 x 46 cells


def frame_to_cell(xy):
    """Frame pixel -> output-map cell, independently of the backend: the frame is resized
    by 2 (pixel centres: x_net = (x + .5) * 2 - .5) and map cell i sits at input pixel
    8 i + 3.5 (stride 8, centre-aligned)."""
    x, y = xy
    xn, yn = (x + 0.5) * 2 - 0.5, (y + 0.5) * 2 - 0.5
    return (xn - 3.5) / 8.0, (yn - 3.5) / 8.0


def make_maps(people, parts, layout, h=46, w=60):
    """OpenPose maps for people given by part name in frame pixels."""
    cells = [{parts.index(n): frame_to_cell(p) for n, p in person.items() if n in parts} for person in people]
    return openpose_maps(cells, layout, (h, w))


def two_people(parts):
    a = {n: PERSON[n] for n in parts if n in PERSON}
    b = {n: (x + SHIFT[0], y + SHIFT[1]) for n, (x, y) in a.items()}
    return [a, b]


def textured_frame(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)


@pytest.mark.parametrize("layout,parts", [(BODY_25, BODY25_PARTS), (COCO_18, COCO_PARTS)], ids=["body25", "coco"])
def test_two_people_recovered_through_cv2_dnn(tmp_path, layout, parts):
    people = two_people(parts)
    maps = make_maps(people, parts, layout)
    assert maps.shape[0] == {"BODY_25": 78, "COCO": 57}[layout.name]
    model = write_openpose_onnx(tmp_path / "tiny_openpose.onnx", maps)
    est = OpenPoseEstimator(model, input_height=NET_H)
    (kp,) = est.estimate([textured_frame()])
    assert est.layout is layout
    assert kp.schema == "wholebody133" and kp.data.shape == (2, 133, 3)

    # expected wholebody133 points of each person (neck / mid-hip have no counterpart)
    expected = []
    for person in people:
        e = np.zeros((133, 3), np.float32)
        for n, (x, y) in person.items():
            if n in ("neck", "mid_hip"):
                continue
            e[schema.index_of(n)] = (x, y, 1.0)
        expected.append(e)
    # match detections to people by the nose
    found = sorted(kp.data, key=lambda p: p[0, 0])
    for got, want in zip(found, expected):
        vis = want[:, 2] > 0
        assert np.array_equal(got[:, 2] > 0, vis), "a part is missing or extra"
        err = np.linalg.norm(got[vis, :2] - want[vis, :2], axis=1)
        assert err.max() < 1.0, f"max error {err.max():.2f} px at {schema.names(np.nonzero(vis)[0][err.argmax():][:1])}"
        assert np.all(got[vis, 2] > 0.9)  # peak heights (the Gaussians peak at 1)


def test_assembly_needs_the_paf(tmp_path):
    """Same part heatmaps but no PAF: no limb can be formed, so nobody is reported."""
    people = two_people(COCO_PARTS)
    maps = make_maps(people, COCO_PARTS, COCO_18)
    maps[19:] = 0.0
    est = OpenPoseEstimator(write_openpose_onnx(tmp_path / "m.onnx", maps), input_height=NET_H)
    assert est.estimate([textured_frame()])[0].num_persons == 0


def test_crossed_pafs_pair_the_right_parts():
    """Two necks, two right shoulders; the PAF says neck 0 -> shoulder 1 and neck 1 ->
    shoulder 0 (the nearer pairs are wrong). Assembly must follow the field, not distance."""
    h, w = 40, 80
    necks = np.array([[20, 20, 0.9], [50, 20, 0.9]], np.float32)
    shoulders = np.array([[45, 22, 0.9], [25, 22, 0.9]], np.float32)  # 0 is near neck 1
    paf = np.zeros((2 * len(COCO_18.pairs), h, w), np.float32)
    k = COCO_18.pairs.index((1, 2))
    cx, cy = COCO_18.paf[k]
    for a, b in ((necks[0], shoulders[1]), (necks[1], shoulders[0])):
        v = b[:2] - a[:2]
        u = v / np.linalg.norm(v)
        for t in np.linspace(0, 1, 200):
            x, y = np.round(a[:2] + t * v).astype(int)
            paf[cx, y - 1 : y + 2, x - 1 : x + 2] = u[0]
            paf[cy, y - 1 : y + 2, x - 1 : x + 2] = u[1]
    peaks = [np.zeros((0, 3), np.float32) for _ in range(18)]
    peaks[1], peaks[2] = necks, shoulders
    people = assemble_people(peaks, paf, COCO_18, min_parts=2, min_person_score=0.0)
    assert len(people) == 2
    for p in people:
        neck_x, sh_x = p[1, 0], p[2, 0]
        assert (neck_x, sh_x) in ((20, 25), (50, 45)), (neck_x, sh_x)


def test_find_peaks_refines_between_pixels():
    gy, gx = np.mgrid[0:30, 0:40].astype(np.float32)
    hm = np.exp(-((gx - 12.3) ** 2 + (gy - 7.6) ** 2) / (2 * 2.0**2)) + 0.7 * np.exp(
        -((gx - 30.0) ** 2 + (gy - 20.0) ** 2) / (2 * 2.0**2)
    )
    pk = find_peaks(hm, 0.05)
    assert pk.shape == (2, 3)
    assert pk[0, 2] > pk[1, 2]  # strongest first
    assert abs(pk[0, 0] - 12.3) < 0.3 and abs(pk[0, 1] - 7.6) < 0.3
    assert abs(pk[1, 0] - 30.0) < 0.05 and abs(pk[1, 1] - 20.0) < 0.05
    assert find_peaks(np.zeros((10, 10), np.float32), 0.05).shape == (0, 3)


def test_score_limb_follows_direction():
    paf_x = np.zeros((20, 40), np.float32)
    paf_y = np.zeros((20, 40), np.float32)
    paf_x[8:12, 5:35] = 1.0  # field pointing +x along y = 10
    a, b = np.array([6.0, 10.0]), np.array([33.0, 10.0])
    assert score_limb(paf_x, paf_y, a, b) == pytest.approx(1.0)
    assert score_limb(paf_x, paf_y, b, a) < 0  # against the field
    assert score_limb(paf_x, paf_y, a, np.array([6.0, 18.0])) < 0  # across it


def test_layout_by_channels():
    assert layout_for_channels(78) is BODY_25 and layout_for_channels(57) is COCO_18
    with pytest.raises(ModelWeightsError, match="78 .*57"):
        layout_for_channels(44)


def test_wrong_channel_count_is_a_weights_error(tmp_path):
    maps = np.zeros((44, 46, 60), np.float32)
    est = OpenPoseEstimator(write_openpose_onnx(tmp_path / "bad.onnx", maps), input_height=NET_H)
    with pytest.raises(ModelWeightsError, match="44 channels"):
        est.estimate([textured_frame()])


def test_missing_model_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv("DEID_OPENPOSE_MODEL", raising=False)
    with pytest.raises(ModelWeightsError, match="DEID_OPENPOSE_MODEL.*evaluate.pose.model_path"):
        OpenPoseEstimator()
    with pytest.raises(ModelWeightsError, match="not found"):
        OpenPoseEstimator(tmp_path / "nope.caffemodel")
    monkeypatch.setenv("DEID_OPENPOSE_MODEL", str(tmp_path / "missing.onnx"))
    with pytest.raises(ModelWeightsError, match="missing.onnx"):
        OpenPoseEstimator()


def test_a_network_that_fails_on_the_frame_is_a_weights_error(tmp_path):
    """A file that cv2.dnn reads but that is no OpenPose (here an ArcFace-shaped net with a
    fixed 112 x 112 input) fails in the forward pass: one ModelWeightsError naming the
    file, not a cv2.error traceback."""
    from test_identity_contract import make_tiny_arcface

    est = OpenPoseEstimator(make_tiny_arcface(tmp_path / "arcface.onnx"))
    with pytest.raises(ModelWeightsError, match="arcface.onnx.*failed on a .*x368 network input.*DEID_OPENPOSE_MODEL") as e:
        est.estimate([textured_frame()])
    assert "\n" not in str(e.value)


def test_evaluate_pose_proto_path_picks_the_caffe_prototxt(tmp_path, monkeypatch):
    """CMU's models/pose/coco/ folder holds two prototxt files: the evaluation had no key
    for the one to use (only DEID_OPENPOSE_PROTO). evaluate.pose.proto_path is it."""
    from deid.config import Config
    from deid.errors import ConfigError
    from deid.evaluate.models import build_pose_estimator

    monkeypatch.delenv("DEID_OPENPOSE_PROTO", raising=False)
    (tmp_path / "pose_iter_440000.caffemodel").write_bytes(b"\0" * 16)
    for n in ("pose_deploy_linevec.prototxt", "pose_deploy_linevec_faster_4_stages.prototxt"):
        (tmp_path / n).write_text("name: 'x'\n")
    base = ["evaluate.pose.backend=openpose", f"evaluate.pose.model_path={tmp_path / 'pose_iter_440000.caffemodel'}"]
    with pytest.raises(ModelWeightsError, match="evaluate.pose.proto_path"):
        build_pose_estimator(Config().replace(*base).evaluate.pose)
    want = tmp_path / "pose_deploy_linevec.prototxt"
    est = build_pose_estimator(Config().replace(*base, f"evaluate.pose.proto_path={want}").evaluate.pose)
    assert est.proto_path == str(want)
    with pytest.raises(ConfigError, match="proto_path"):  # a key for openpose only
        build_pose_estimator(Config().replace("evaluate.pose.backend=mediapipe_holistic", f"evaluate.pose.proto_path={want}").evaluate.pose)
