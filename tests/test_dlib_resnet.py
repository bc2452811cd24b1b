"""dlib's face-recognition ResNet on torch (deid/identity/dlib_resnet.py): the file is read
as dlib wrote it, and the descriptor is dlib's own, on real and on arbitrary chips."""

from __future__ import annotations

import logging
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from deid.errors import ModelWeightsError
from deid.identity.dlib_resnet import DlibResNet, compile_ops, read_layers
from deid.identity.landmarks import model_file
from deid.registry import IDENTITY_ENCODERS

REPO = Path(__file__).resolve().parents[1]
TALKING = REPO / "demo_media" / "talking_head_1.mp4"


@pytest.fixture(scope="module")
def resnet_file() -> str:
    return model_file("resnet")


@pytest.fixture(scope="module")
def dlib_net(resnet_file):
    import dlib

    return dlib.face_recognition_model_v1(resnet_file)


@pytest.fixture(scope="module")
def torch_net(resnet_file):
    return DlibResNet(resnet_file)


@pytest.fixture(scope="module")
def talking_faces():
    """Frames of the shipped talking head and dlib HOG's face boxes in them."""
    from deid.detect.dlib_backend import DlibHogDetector
    from deid.io import read_frames

    frames = read_frames(TALKING, [0, 40, 80, 120, 160, 199])
    dets = DlibHogDetector(upsample=1).detect(frames)
    boxes = [np.asarray(d.boxes, np.float32).reshape(-1, 4) for d in dets]
    assert sum(len(b) for b in boxes) >= 5, "the talking head should show its face in most sampled frames"
    return frames, boxes


def test_reads_the_shipped_network(resnet_file, torch_net):
    layers = read_layers(resnet_file)
    n = Counter(L.name for L in layers)
    # 1 stem + 14 residual blocks of two convolutions, each with its frozen batch norm;
    # 4 down-sampling blocks + the global pool; one 256 -> 128 linear layer
    assert n["con_4"] == 29 and n["affine_"] == 29 and n["add_prev_"] == 14
    assert n["avg_pool_2"] == 5 and n["max_pool_2"] == 1 and n["fc_2"] == 1
    assert layers[0].name == "con_4" and layers[0].ints == (32, 7, 7, 2, 2, 0, 0)
    assert layers[-1].name == "fc_2" and layers[-1].ints == (128, 256)
    assert torch_net.dim == 128
    assert sum(o.block_start for o in torch_net.ops) == 14


def _aligned_chips(frames, boxes):
    import dlib

    from deid.identity.landmarks import dlib_rect, load_shape_predictor

    sp = load_shape_predictor(model_file("sp5"))
    chips = []
    for f, bs in zip(frames, boxes):
        img = np.ascontiguousarray(f)
        for b in bs:
            chips.append(dlib.get_face_chip(img, sp(img, dlib_rect(b)), size=150, padding=0.25))
    return chips


def test_same_descriptor_as_dlib_on_real_faces(talking_faces, dlib_net, torch_net):
    chips = _aligned_chips(*talking_faces)
    ref = np.asarray(dlib_net.compute_face_descriptor(chips, 0), np.float32)
    out = torch_net(chips)
    assert out.shape == ref.shape == (len(chips), 128) and out.dtype == np.float32
    assert np.abs(out - ref).max() < 1e-4
    # the quantity every decision uses: distances between faces
    d_ref = np.linalg.norm(ref[:, None] - ref[None], axis=2)
    d_out = np.linalg.norm(out[:, None] - out[None], axis=2)
    assert np.abs(d_out - d_ref).max() < 1e-4


def test_same_descriptor_as_dlib_on_arbitrary_chips(dlib_net, torch_net):
    """Noise, flat and saturated chips: every layer (the odd-sized residual additions
    included) has to agree, not just the ones a typical face exercises."""
    rng = np.random.default_rng(0)
    chips = [rng.integers(0, 256, (150, 150, 3), dtype=np.uint8) for _ in range(3)]
    chips += [np.full((150, 150, 3), v, np.uint8) for v in (0, 128, 255)]
    ref = np.asarray(dlib_net.compute_face_descriptor(chips, 0), np.float32)
    assert np.abs(torch_net(chips) - ref).max() < 1e-4
    assert torch_net([]).shape == (0, 128)
    with pytest.raises(ValueError, match="RGB"):
        torch_net([np.zeros((150, 150), np.uint8)])


def test_encoder_runtimes_agree(talking_faces):
    frames, boxes = talking_faces
    t = IDENTITY_ENCODERS.create("dlib")
    d = IDENTITY_ENCODERS.create("dlib", runtime="dlib")
    assert (t.runtime, d.runtime) == ("torch", "dlib")
    et, ed = t.embed(frames, boxes), d.embed(frames, boxes)
    for a, b in zip(et, ed):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-4, equal_nan=True)
    # a pickled encoder (Ray ships them) keeps its runtime
    assert pickle.loads(pickle.dumps(d)).runtime == "dlib"
    assert pickle.loads(pickle.dumps(t)).runtime == "torch"
    with pytest.raises(ValueError, match="runtime"):
        IDENTITY_ENCODERS.create("dlib", runtime="tensorflow")


def test_jitter_runs_on_dlib():
    assert IDENTITY_ENCODERS.create("dlib", num_jitters=2).runtime == "dlib"


def test_unreadable_files_are_refused(tmp_path, resnet_file):
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    with pytest.raises(ModelWeightsError, match="empty.dat"):
        DlibResNet(empty)
    with pytest.raises(ModelWeightsError, match="cannot read"):
        DlibResNet(tmp_path / "missing.dat")
    data = Path(resnet_file).read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])  # ends inside a tensor / before the linear layer
    with pytest.raises(ModelWeightsError, match="cut.dat"):
        DlibResNet(cut)


def test_one_file_is_parsed_once_and_a_changed_file_again(tmp_path, resnet_file, torch_net):
    assert DlibResNet(resnet_file).ops is torch_net.ops  # the audit's, the evaluation's, doctor's: one parse
    copy = tmp_path / "copy.dat"
    data = Path(resnet_file).read_bytes()
    copy.write_bytes(data)
    first = DlibResNet(copy)
    assert first.ops is not torch_net.ops and DlibResNet(copy).ops is first.ops
    copy.write_bytes(data[: len(data) // 2])  # replaced in place: read again, and refused
    with pytest.raises(ModelWeightsError, match="copy.dat"):
        DlibResNet(copy)


def test_layer_sequences_it_cannot_follow_are_refused(resnet_file):
    layers = read_layers(resnet_file)
    with pytest.raises(ModelWeightsError, match="batch-norm"):
        compile_ops([L for L in layers if L.name != "affine_"])
    with pytest.raises(ModelWeightsError, match="global pool"):
        compile_ops(layers[:-1])  # no final linear layer
    first64 = next(i for i, L in enumerate(layers) if L.name == "con_4" and L.ints[0] == 64)
    with pytest.raises(ModelWeightsError, match="takes 64 channels where 32 arrive"):
        compile_ops(layers[:first64] + layers[first64 + 2 :])  # the widening convolution gone
    with pytest.raises(ModelWeightsError, match="without a block input"):
        compile_ops([L for L in layers if L.name != "max_pool_2"])  # no block ever starts


def test_falls_back_to_dlib_when_torch_cannot_read_the_file(monkeypatch, caplog):
    import deid.identity.dlib_resnet as dr

    def refuse(path):
        raise ModelWeightsError(f"{path}: not a dlib face-recognition ResNet this reader can run (test)")

    monkeypatch.setattr(dr, "DlibResNet", refuse)
    with caplog.at_level(logging.WARNING):
        enc = IDENTITY_ENCODERS.create("dlib")
    assert enc.runtime == "dlib"
    assert "running dlib's own forward pass" in caplog.text


def test_missing_model_file_is_a_clear_error_without_fallback(tmp_path, caplog):
    with caplog.at_level(logging.WARNING), pytest.raises(ModelWeightsError, match="no such dlib face recognition model"):
        IDENTITY_ENCODERS.create("dlib", model_path=str(tmp_path / "nope.dat"))
    assert "forward pass instead" not in caplog.text
