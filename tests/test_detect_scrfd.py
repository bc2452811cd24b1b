"""The ``scrfd`` detector end to end on a tiny ONNX built here with SCRFD's signature
(input 1x3xHxW, dynamic H/W; 9 outputs: score, bbox distance, 5-keypoint distance for
strides 8/16/32, 2 anchors per location), which InsightFace's model zoo routes to its
SCRFD class. No user weights.

The tiny model "sees" a face where the input is red: at stride 16, anchor 0 of a cell
scores ``0.45 * (R - B)`` (network input normalised as InsightFace does, ``(x-127.5)/128``,
channels in RGB order) averaged over the cell's 8x8 interior; every other score is 0.
Every anchor's box / keypoint distances are the constants below (in stride units). A red
square covering exactly one stride-16 cell of InsightFace's letterboxed 640x640 input
therefore gives one face whose box and landmarks are known in the frame's own pixels:
anchor point = the square's top-left corner, offsets = distances * (cell size in frame
pixels)."""

from __future__ import annotations

import numpy as np
import pytest

from deid.detect import build_detector
from deid.types import Detections

STRIDE = 16
INPUT = 640  # ScrfdDetector's default input_size
SCORE_GAIN = 0.45
BOX_D = np.array([1.5, 2.0, 2.5, 3.0], np.float32)  # left, top, right, bottom (stride units)
KPS_D = np.array(  # eyes, nose, mouth corners: (dx, dy) from the anchor (stride units)
    [[-0.8, -0.6], [0.9, -0.5], [0.1, 0.4], [-0.6, 1.3], [0.7, 1.4]], np.float32
)


def make_tiny_scrfd(path):
    """~40-node ONNX with det_10g's input/output signature (see the module docstring)."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    const("ch0", np.array([0], np.int64))
    const("ch1", np.array([1], np.int64))
    const("ch2", np.array([2], np.int64))
    const("ch3", np.array([3], np.int64))
    const("ax1", np.array([1], np.int64))
    const("zero", np.array(0.0, np.float32))
    const("one", np.array(1.0, np.float32))
    const("gain", np.array(SCORE_GAIN, np.float32))
    # R - B of the (RGB-ordered) network input: (1, 1, H, W)
    nodes += [
        helper.make_node("Slice", ["input.1", "ch0", "ch1", "ax1"], ["r"]),
        helper.make_node("Slice", ["input.1", "ch2", "ch3", "ax1"], ["b"]),
        helper.make_node("Sub", ["r", "b"], ["rb"]),
    ]
    scores, boxes, kpss = [], [], []
    for s in (8, 16, 32):
        # a zero map with the stride's grid: (1, 1, H/s, W/s)
        nodes += [
            helper.make_node("AveragePool", ["rb"], [f"pool{s}"], kernel_shape=[s, s], strides=[s, s]),
            helper.make_node("Mul", [f"pool{s}", "zero"], [f"z{s}"]),
        ]
        if s == STRIDE:
            # anchor 0: mean R-B over the cell's interior [4, 12) x [4, 12), scaled, clipped to [0, 1]
            const("st4", np.array([4, 4], np.int64))
            const("end", np.array([1 << 30, 1 << 30], np.int64))
            const("ax23", np.array([2, 3], np.int64))
            nodes += [
                helper.make_node("Slice", ["rb", "st4", "end", "ax23"], ["rb_in"]),
                helper.make_node("AveragePool", ["rb_in"], ["mid"], kernel_shape=[8, 8], strides=[s, s]),
                helper.make_node("Mul", ["mid", "gain"], ["mid_g"]),
                helper.make_node("Clip", ["mid_g", "zero", "one"], ["a0"]),
            ]
            first = "a0"
        else:
            first = f"z{s}"
        const(f"bd{s}", np.tile(BOX_D, 2).reshape(1, 8, 1, 1))
        const(f"kd{s}", np.tile(KPS_D.reshape(-1), 2).reshape(1, 20, 1, 1))
        const(f"r1_{s}", np.array([-1, 1], np.int64))
        const(f"r4_{s}", np.array([-1, 4], np.int64))
        const(f"r10_{s}", np.array([-1, 10], np.int64))
        nodes += [
            # like SCRFD's heads: (1, A*C, h, w) -> permute(0, 2, 3, 1) -> (h*w*A, C)
            helper.make_node("Concat", [first, f"z{s}"], [f"sc{s}"], axis=1),
            helper.make_node("Transpose", [f"sc{s}"], [f"sct{s}"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"sct{s}", f"r1_{s}"], [f"score_{s}"]),
            helper.make_node("Add", [f"z{s}", f"bd{s}"], [f"bb{s}"]),
            helper.make_node("Transpose", [f"bb{s}"], [f"bbt{s}"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"bbt{s}", f"r4_{s}"], [f"bbox_{s}"]),
            helper.make_node("Add", [f"z{s}", f"kd{s}"], [f"kp{s}"]),
            helper.make_node("Transpose", [f"kp{s}"], [f"kpt{s}"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"kpt{s}", f"r10_{s}"], [f"kps_{s}"]),
        ]
        scores.append(helper.make_tensor_value_info(f"score_{s}", TensorProto.FLOAT, [f"n{s}", 1]))
        boxes.append(helper.make_tensor_value_info(f"bbox_{s}", TensorProto.FLOAT, [f"n{s}", 4]))
        kpss.append(helper.make_tensor_value_info(f"kps_{s}", TensorProto.FLOAT, [f"n{s}", 10]))
    graph = helper.make_graph(
        nodes,
        "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "H", "W"])],
        scores + boxes + kpss,  # InsightFace's order: all scores, all boxes, all keypoints
        inits,
    )
    from deid.testing import ONNX_OPSET, save_onnx

    return save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)]), path)


@pytest.fixture(scope="module")
def tiny_scrfd_path(tmp_path_factory):
    return str(make_tiny_scrfd(tmp_path_factory.mktemp("scrfd") / "tiny_scrfd.onnx"))


@pytest.fixture(scope="module")
def det(tiny_scrfd_path):
    return build_detector(name="scrfd", model_path=tiny_scrfd_path, min_score=0.2)


def cell_px(h, w):
    """Frame pixels per stride-16 cell of the letterboxed 640x640 input."""
    return STRIDE * max(h, w) / INPUT


def face_frame(h, w, cells, rgb=(255, 0, 0)):
    """Black RGB frame with a square of colour ``rgb`` on each stride-16 cell in ``cells``."""
    f = np.zeros((h, w, 3), np.uint8)
    c = cell_px(h, w)
    assert c == int(c), "cell must be a whole number of frame pixels"
    c = int(c)
    for cx, cy in cells:
        f[cy * c : (cy + 1) * c, cx * c : (cx + 1) * c] = rgb
    return f


def expected_face(h, w, cell):
    c = cell_px(h, w)
    anchor = np.array(cell, np.float32) * c  # the square's top-left corner, in frame pixels
    box = np.concatenate([anchor - BOX_D[:2] * c, anchor + BOX_D[2:] * c])
    return box, anchor + KPS_D * c


def test_insightface_routes_the_file_to_scrfd(tiny_scrfd_path, det):
    from insightface.model_zoo import get_model
    from insightface.model_zoo.scrfd import SCRFD

    m = get_model(tiny_scrfd_path, providers=["CPUExecutionProvider"])
    assert isinstance(m, SCRFD)
    assert m.use_kps and m.fmc == 3 and m._num_anchors == 2 and list(m._feat_stride_fpn) == [8, 16, 32]
    assert det.name == "scrfd" and isinstance(det._m, SCRFD)


# 320x240: 640x480 after resizing, padded at the bottom (8 frame px per cell);
# 180x360 (portrait): 320x640, padded on the right (9 frame px per cell)
@pytest.mark.parametrize("h, w, cell", [(240, 320, (6, 8)), (360, 180, (7, 20)), (240, 320, (30, 18))])
def test_box_landmarks_and_score_in_frame_pixels(det, h, w, cell):
    [d] = det.detect([face_frame(h, w, [cell])])
    assert isinstance(d, Detections) and len(d) == 1
    box, kps = expected_face(h, w, cell)
    np.testing.assert_allclose(d.boxes[0], box, atol=1.0)
    assert d.landmarks is not None and d.landmarks.shape == (1, 5, 2)
    np.testing.assert_allclose(d.landmarks[0], kps, atol=1.0)
    # 0.45 * (R - B) / 128 for pure red
    assert d.scores[0] == pytest.approx(SCORE_GAIN * 255 / 128, abs=1e-3)
    assert d.boxes.dtype == np.float32 and d.scores.dtype == np.float32 and d.landmarks.dtype == np.float32


def test_frames_are_rgb(det):
    """deid frames are RGB: red (R=255) is what the model's first channel must see."""
    h, w, cell = 240, 320, (6, 8)
    assert len(det.detect([face_frame(h, w, [cell], rgb=(255, 0, 0))])[0]) == 1
    # the same square in blue (i.e. red if the frame were read as BGR) is no face
    assert len(det.detect([face_frame(h, w, [cell], rgb=(0, 0, 255))])[0]) == 0


def test_min_score_filters(tiny_scrfd_path):
    h, w = 240, 320
    # bright red scores ~0.896, dim red (R=100) ~0.352
    f = face_frame(h, w, [(6, 8)])
    c = int(cell_px(h, w))
    f[4 * c : 5 * c, 24 * c : 25 * c] = (100, 0, 0)
    low = build_detector(name="scrfd", model_path=tiny_scrfd_path, min_score=0.3).detect([f])[0]
    assert len(low) == 2
    np.testing.assert_allclose(np.sort(low.scores), [SCORE_GAIN * 100 / 128, SCORE_GAIN * 255 / 128], atol=1e-3)
    dim_box, _ = expected_face(h, w, (24, 4))
    np.testing.assert_allclose(low.boxes[np.argmin(low.scores)], dim_box, atol=1.0)
    mid = build_detector(name="scrfd", model_path=tiny_scrfd_path, min_score=0.5).detect([f])[0]
    assert len(mid) == 1 and mid.scores[0] > 0.5
    np.testing.assert_allclose(mid.boxes[0], expected_face(h, w, (6, 8))[0], atol=1.0)
    high = build_detector(name="scrfd", model_path=tiny_scrfd_path, min_score=0.95).detect([f])[0]
    assert len(high) == 0 and high.boxes.shape == (0, 4)


def test_batch_returns_one_detections_per_frame(det):
    frames = [
        face_frame(240, 320, [(6, 8)]),
        np.zeros((240, 320, 3), np.uint8),  # no face
        face_frame(360, 180, [(7, 20)]),  # another size in the same call
        face_frame(240, 320, [(6, 8), (30, 18)]),  # two faces
    ]
    out = det.detect(frames)
    assert len(out) == 4 and all(isinstance(d, Detections) for d in out)
    assert [len(d) for d in out] == [1, 0, 1, 2]
    np.testing.assert_allclose(out[0].boxes[0], expected_face(240, 320, (6, 8))[0], atol=1.0)
    np.testing.assert_allclose(out[2].boxes[0], expected_face(360, 180, (7, 20))[0], atol=1.0)
    got = out[3].boxes[np.argsort(out[3].boxes[:, 0])]
    want = np.stack([expected_face(240, 320, cell)[0] for cell in [(6, 8), (30, 18)]])
    np.testing.assert_allclose(got, want, atol=1.0)
    assert det.detect([]) == []


def test_boxes_are_clipped_to_the_frame(det):
    # a face in the top-left cell: its box starts left of / above the frame
    [d] = det.detect([face_frame(240, 320, [(0, 0)])])
    box, _ = expected_face(240, 320, (0, 0))
    assert box[0] < 0 and box[1] < 0
    np.testing.assert_allclose(d.boxes[0], [0, 0, box[2], box[3]], atol=1.0)


def test_a_model_failing_on_a_frame_is_one_error(tiny_scrfd_path, monkeypatch):
    from deid.errors import ModelWeightsError

    d = build_detector(name="scrfd", model_path=tiny_scrfd_path)

    def boom(*a, **k):
        raise ValueError("operands could not be broadcast together\n with shapes (800,2) (400,4)")

    monkeypatch.setattr(d._m, "detect", boom)
    with pytest.raises(ModelWeightsError, match="tiny_scrfd.onnx failed on a frame.*broadcast.*DEID_SCRFD_MODEL") as e:
        d.detect([np.zeros((64, 64, 3), np.uint8)])
    assert "\n" not in str(e.value)


def test_scrfd_as_the_evaluations_attacker_reads_detect_model_path(tiny_scrfd_path, monkeypatch):
    """evaluate.face_detector=scrfd: the attacker's detector loads the file named in
    detect.model_path (what its error message asks for), not only $DEID_SCRFD_MODEL."""
    from deid.config import Config
    from deid.evaluate.models import EvalModels

    monkeypatch.delenv("DEID_SCRFD_MODEL", raising=False)
    cfg = Config().replace("evaluate.face_detector=scrfd", f"detect.model_path={tiny_scrfd_path}", "evaluate.locate_faces=none")
    mdl = EvalModels.build(cfg)
    assert mdl.detector.name == "scrfd" and mdl.detector.model_path == tiny_scrfd_path


def with_half_precision_io(src, dst):
    """The model at ``src`` with float16 inputs and outputs (Casts around the float32
    graph), the signature of a float16 export."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(src))
    g = m.graph
    for vi in list(g.input):
        inner = vi.name + "__f32"
        for node in g.node:
            node.input[:] = [inner if n == vi.name else n for n in node.input]
        g.node.insert(0, helper.make_node("Cast", [vi.name], [inner], to=TensorProto.FLOAT))
        vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    for vo in list(g.output):
        inner = vo.name + "__f32"
        for node in g.node:
            node.output[:] = [inner if n == vo.name else n for n in node.output]
        g.node.append(helper.make_node("Cast", [inner], [vo.name], to=TensorProto.FLOAT16))
        vo.type.tensor_type.elem_type = TensorProto.FLOAT16
    from deid.testing import save_onnx

    return str(save_onnx(m, dst))


def test_a_half_precision_export_finds_the_same_face(tiny_scrfd_path, tmp_path):
    """A float16 SCRFD export failed on its first frame (onnxruntime: "expected
    tensor(float16)"); InsightFace's float32 blob is now cast around the session."""
    half = build_detector(name="scrfd", model_path=with_half_precision_io(tiny_scrfd_path, tmp_path / "half.onnx"),
                          min_score=0.2)
    h, w, cell = 240, 320, (6, 8)
    [d] = half.detect([face_frame(h, w, [cell])])
    box, kps = expected_face(h, w, cell)
    assert len(d) == 1 and d.boxes.dtype == np.float32
    np.testing.assert_allclose(d.boxes[0], box, atol=1.0)
    np.testing.assert_allclose(d.landmarks[0], kps, atol=1.0)
    assert d.scores[0] == pytest.approx(SCORE_GAIN * 255 / 128, abs=2e-3)
