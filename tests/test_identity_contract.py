"""Contract tests every identity backend passes (shapes, dtypes, empty input, NaN rows
for faces that cannot be embedded), on synthetic frames: no media, no user weights.
ArcFace runs on a tiny ONNX built here with ArcFace's signature (1x3x112x112 -> 1x512),
which InsightFace's model zoo routes to its ArcFaceONNX class."""

from __future__ import annotations

import numpy as np
import pytest

from deid.errors import ModelWeightsError
from deid.protocols import IdentityEncoder
from deid.registry import IDENTITY_ENCODERS


def make_tiny_arcface(path, batch=1, dim=512, seed=0, half=False):
    """A 3-node ONNX (pool 14x14 -> flatten -> random projection) shaped like ArcFace
    (``half``: a float16 export, input and output included)."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((3 * 8 * 8, dim)).astype(np.float16 if half else np.float32)
    kind = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("AveragePool", ["data"], ["p"], kernel_shape=[14, 14], strides=[14, 14], name="pool"),
            helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flat"),
            helper.make_node("MatMul", ["f", "W"], ["fc1"], name="fc"),
        ],
        "tiny_arcface",
        [helper.make_tensor_value_info("data", kind, [batch, 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", kind, [batch, dim])],
        [numpy_helper.from_array(w, "W")],
    )
    from deid.testing import ONNX_OPSET, save_onnx

    return save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)]), path)


@pytest.fixture(scope="module")
def tiny_arcface_path(tmp_path_factory):
    return make_tiny_arcface(tmp_path_factory.mktemp("arcface") / "tiny_arcface.onnx")


@pytest.fixture(scope="module", params=["dlib", "arcface"])
def encoder(request, tiny_arcface_path):
    if request.param == "dlib":
        return IDENTITY_ENCODERS.create("dlib")
    return IDENTITY_ENCODERS.create("arcface", model_path=str(tiny_arcface_path))


def textured_frame(h=240, w=320, seed=0):
    """A frame with structure (blobs + gradient) so crops differ from place to place."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 255 // (w + h))], axis=2).astype(np.float32)
    img += rng.normal(0, 25, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


GOOD = np.array([[40, 30, 140, 150], [180, 60, 280, 180]], np.float32)


def test_implements_protocol(encoder):
    assert isinstance(encoder, IdentityEncoder)
    assert encoder.dim in (128, 512)
    assert encoder.threshold > 0
    assert encoder.name in ("dlib", "arcface")


def test_shapes_and_dtypes(encoder):
    frames = [textured_frame(seed=0), textured_frame(seed=1), textured_frame(seed=2)]
    boxes = [GOOD, GOOD[:1], np.zeros((0, 4), np.float32)]
    out = encoder.embed(frames, boxes)
    assert [o.shape for o in out] == [(2, encoder.dim), (1, encoder.dim), (0, encoder.dim)]
    assert all(o.dtype == np.float32 for o in out)
    assert np.isfinite(out[0]).all() and np.isfinite(out[1]).all()
    # same pixels, same box -> same embedding; different place -> different embedding
    again = encoder.embed(frames[:1], [GOOD])[0]
    np.testing.assert_allclose(again, out[0], rtol=1e-5, atol=1e-5)
    d = encoder.distance(out[0], out[0])
    assert d.shape == (2, 2) and d.dtype == np.float32
    assert d[0, 0] == pytest.approx(0.0, abs=1e-5)
    assert d[0, 1] > 1e-3


def test_empty_input(encoder):
    assert encoder.embed([], []) == []
    out = encoder.embed([textured_frame()], [np.zeros((0, 4), np.float32)])
    assert out[0].shape == (0, encoder.dim) and out[0].dtype == np.float32
    assert encoder.distance(out[0], out[0]).shape == (0, 0)


@pytest.mark.parametrize(
    "bad",
    [
        [0, 0, 0, 0],  # degenerate
        [10, 10, 14, 14],  # too small to hold a face
        [np.nan, 10, 60, 60],  # no box (e.g. a track with a gap)
        [400, 300, 500, 400],  # entirely outside the frame
    ],
)
def test_nan_rows_for_faces_that_cannot_be_embedded(encoder, bad):
    boxes = np.array([GOOD[0], bad, GOOD[1]], np.float32)
    out = encoder.embed([textured_frame()], [boxes])[0]
    assert out.shape == (3, encoder.dim)
    assert np.isnan(out[1]).all()
    assert np.isfinite(out[[0, 2]]).all(), "a bad box must not disturb its neighbours"
    d = encoder.distance(out, out)
    assert np.isnan(d[1]).all() and np.isfinite(d[0, [0, 2]]).all()


def test_input_errors_are_clear(encoder):
    with pytest.raises(ValueError, match="frames but"):
        encoder.embed([textured_frame()], [])
    with pytest.raises(ValueError, match="RGB uint8"):
        encoder.embed([textured_frame().astype(np.float32)], [GOOD])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        encoder.embed([textured_frame()], [np.zeros((2, 5), np.float32)])


def test_arcface_missing_model_names_env_and_config(monkeypatch, tmp_path):
    monkeypatch.delenv("DEID_ARCFACE_MODEL", raising=False)
    with pytest.raises(ModelWeightsError, match="DEID_ARCFACE_MODEL") as e:
        IDENTITY_ENCODERS.create("arcface")
    assert "evaluate.identity.model_path" in str(e.value)
    monkeypatch.setenv("DEID_ARCFACE_MODEL", str(tmp_path / "nope.onnx"))
    with pytest.raises(ModelWeightsError, match="nope.onnx"):
        IDENTITY_ENCODERS.create("arcface")


def test_arcface_rejects_a_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelWeightsError, match="bad.onnx"):
        IDENTITY_ENCODERS.create("arcface", model_path=str(bad))


def test_arcface_env_var_and_dynamic_batch(monkeypatch, tmp_path):
    path = make_tiny_arcface(tmp_path / "dyn.onnx", batch="N", dim=256)
    monkeypatch.setenv("DEID_ARCFACE_MODEL", str(path))
    enc = IDENTITY_ENCODERS.create("arcface")
    assert enc.dim == 256
    out = enc.embed([textured_frame()], [GOOD])[0]
    assert out.shape == (2, 256) and np.isfinite(out).all()
    # cosine distance is scale-free and in [0, 2]
    d = enc.distance(out, out * 3.0)
    assert np.allclose(np.diag(d), 0.0, atol=1e-5) and (d >= 0).all() and (d <= 2).all()


def test_arcface_keypoints_in_insightface_order(tiny_arcface_path):
    enc = IDENTITY_ENCODERS.create("arcface", model_path=str(tiny_arcface_path))
    kps = enc.keypoints(textured_frame(), GOOD[0])
    assert kps.shape == (5, 2) and kps.dtype == np.float32
    # whatever the image, dlib's mean face keeps the layout: eyes above nose above mouth,
    # image-left points left of image-right points
    assert kps[0, 0] < kps[1, 0] and kps[3, 0] < kps[4, 0]
    assert max(kps[0, 1], kps[1, 1]) < kps[2, 1] < min(kps[3, 1], kps[4, 1])


def test_distance_functions():
    from deid.identity import cosine_distance, euclidean_distance

    a = np.array([[3.0, 4.0], [0.0, 1.0]], np.float32)
    b = np.array([[0.0, 0.0], [0.0, 2.0]], np.float32)
    np.testing.assert_allclose(euclidean_distance(a, b), [[5.0, np.hypot(3, 2)], [1.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(cosine_distance(a, b[1:]), [[1 - 0.8], [0.0]], atol=1e-6)


def test_build_from_config(tiny_arcface_path):
    from deid.config import IdentityConfig
    from deid.identity import build_identity_encoder
    from deid.identity.arcface_backend import ARCFACE_THRESHOLD

    assert build_identity_encoder(IdentityConfig()).threshold == 0.6
    enc = build_identity_encoder(IdentityConfig(backend="arcface", model_path=str(tiny_arcface_path)))
    assert enc.name == "arcface" and enc.threshold == ARCFACE_THRESHOLD


def test_pickles_by_rebuilding(encoder):
    """Encoders travel to worker processes as (class, arguments) and reload their models."""
    import pickle

    clone = pickle.loads(pickle.dumps(encoder))
    assert type(clone) is type(encoder) and clone.threshold == encoder.threshold and clone.dim == encoder.dim
    f = textured_frame()
    np.testing.assert_allclose(clone.embed([f], [GOOD])[0], encoder.embed([f], [GOOD])[0], atol=1e-6)


def test_box_partly_outside_the_frame_is_embedded(encoder):
    out = encoder.embed([textured_frame()], [np.array([[-40, -30, 90, 100]], np.float32)])[0]
    assert out.shape == (1, encoder.dim) and np.isfinite(out).all()


def test_the_leak_audit_can_use_arcface_with_its_own_threshold(monkeypatch, tiny_arcface_path):
    """audit.identity_backend=arcface (the user's model from $DEID_ARCFACE_MODEL): the
    pipeline builds it, and the audit's 0.6 default becomes ArcFace's 0.72."""
    from deid.config import Config
    from deid.identity import effective_threshold
    from deid.pipeline import Components

    monkeypatch.setenv("DEID_ARCFACE_MODEL", str(tiny_arcface_path))
    cfg = Config().replace("audit.identity_backend=arcface", "track.pose_fallback=false")
    comp = Components.build(cfg, [])
    assert comp.identity.name == "arcface"
    assert effective_threshold(comp.identity, cfg.audit.threshold) == pytest.approx(0.72)


def test_arcface_rejects_a_model_whose_output_is_not_an_embedding(tmp_path):
    """A 112 x 112-input net that outputs an image (a restoration or parsing model) is routed
    to ArcFaceONNX by InsightFace; it must fail at load naming the file, not with a reshape
    traceback on the first face."""
    from onnx import TensorProto, helper

    from deid.testing import ONNX_OPSET, save_onnx

    g = helper.make_graph([helper.make_node("Identity", ["data"], ["out"])], "image_out",
                          [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 112, 112])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 112, 112])])
    path = save_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", ONNX_OPSET)]), tmp_path / "gfpgan.onnx")
    with pytest.raises(ModelWeightsError, match=r"gfpgan.onnx: outputs \[1, 3, 112, 112\], not an embedding.*DEID_ARCFACE_MODEL"):
        IDENTITY_ENCODERS.create("arcface", model_path=str(path))


def test_arcface_failing_on_a_face_is_one_error(encoder, monkeypatch):
    if encoder.name != "arcface":
        pytest.skip("ArcFace only")

    def boom(*a, **k):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION :\n Non-zero status code")

    monkeypatch.setattr(encoder._model, "get_feat", boom)
    with pytest.raises(ModelWeightsError, match="failed on a face.*RUNTIME_EXCEPTION : Non-zero.*DEID_ARCFACE_MODEL") as e:
        encoder.embed([textured_frame()], [GOOD])
    assert "\n" not in str(e.value)


def test_the_audit_record_names_the_recognisers_model_file(tiny_arcface_path):
    """audit.identity_backend=arcface loads $DEID_ARCFACE_MODEL, which no config records:
    the audit record's attacker names the file its leak numbers came from."""
    from deid.audit import attacker_name

    enc = IDENTITY_ENCODERS.create("arcface", model_path=str(tiny_arcface_path))
    assert attacker_name(enc) == "dlib HOG detector + arcface identity encoder (tiny_arcface.onnx)"


def test_a_half_precision_arcface_export_gives_the_float32_models_embeddings(tmp_path):
    """A float16 ArcFace export (made for GPUs) failed on its first face (onnxruntime:
    "expected tensor(float16)"): InsightFace's float32 blob is cast around the session."""
    full = IDENTITY_ENCODERS.create("arcface", model_path=str(make_tiny_arcface(tmp_path / "a32.onnx")))
    half = IDENTITY_ENCODERS.create("arcface", model_path=str(make_tiny_arcface(tmp_path / "a16.onnx", half=True)))
    frame = textured_frame()
    a, b = full.embed([frame], [GOOD])[0], half.embed([frame], [GOOD])[0]
    assert b.dtype == np.float32 and b.shape == a.shape == (2, 512) and np.isfinite(b).all()
    d = np.asarray(full.distance(a, b))
    assert np.all(np.diag(d) < 0.01) and np.all(d[~np.eye(2, dtype=bool)] > 0.05)  # same places alike, others apart
