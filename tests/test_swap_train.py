"""Swap training on synthetic faces: a tiny model, a few steps, checkpoints, resume, reports."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from deid.config import SwapConfig
from deid.errors import ConfigError, InvalidInputError, ModelWeightsError
from deid.swap.faceset import FaceSet, extract_faceset
from deid.swap.testing import SyntheticLandmarker, write_synthetic_donor
from deid.swap.train import CHECKPOINT, FORMAT, TrainData, fit, load_checkpoint, load_model
from deid.testing import ColorFaceDetector, make_synthetic_video

CFG = SwapConfig(preset="tiny", max_steps=6, max_minutes=0)


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory) -> TrainData:
    """Face sets extracted (detector -> landmarks -> alignment -> quality filter) from a
    synthetic patient clip and a synthetic donor folder of PNG frames."""
    d = tmp_path_factory.mktemp("swapdata")
    clip = make_synthetic_video(d / "patient.mp4", n_frames=24, width=320, height=240)
    donor = write_synthetic_donor(d / "donor", n=16, width=320, height=240)
    kw = dict(detector=ColorFaceDetector(), landmarker=SyntheticLandmarker())
    pat = extract_faceset([clip.path], 32, **kw)
    don = extract_faceset([donor], 32, **kw)
    assert pat.stats.frames_seen == 24 and pat.stats.kept == len(pat.faceset)
    return TrainData(pat.faceset, don.faceset)


def test_face_sets_come_from_the_synthetic_material(synthetic_data):
    p, d = synthetic_data.patient, synthetic_data.donor
    assert len(p) >= 16 and len(d) >= 12
    assert p.crops.shape[1:] == (32, 32, 3) and p.crops.dtype == np.uint8
    # the transforms are kept: every face's matrix maps its landmarks into the crop
    assert np.all(np.isfinite(p.matrices)) and p.matrices.shape == (len(p), 2, 3)
    assert len(set(p.frame_index.tolist())) == len(p)
    # the face (magenta) fills the middle of each aligned crop
    mid = p.crops[:, 12:20, 12:20].reshape(-1, 3).mean(0)
    assert mid[0] > 150 and mid[1] < 120 and mid[2] > 120


def test_face_set_round_trips_through_npz(synthetic_data, tmp_path):
    p = synthetic_data.patient
    q = FaceSet.load(p.save(tmp_path / "p.npz"))
    np.testing.assert_array_equal(q.crops, p.crops)
    np.testing.assert_allclose(q.matrices, p.matrices)
    assert q.sources == p.sources
    with pytest.raises(InvalidInputError, match="not found"):
        FaceSet.load(tmp_path / "missing.npz")


def test_fit_trains_reports_and_writes_checkpoint_and_preview(synthetic_data, tmp_path):
    reports = []
    res = fit(synthetic_data, dataclasses.replace(CFG, max_steps=40), tmp_path, report=reports.append, report_every=10, device="cpu")
    assert res.steps == 40 and res.stopped_by == "max_steps"
    assert Path(res.checkpoint).is_file() and Path(res.preview).is_file()
    assert [r["step"] for r in reports][:4] == [10, 20, 30, 40]
    assert {"loss_patient", "loss_donor", "elapsed_s", "steps_per_s"} <= set(reports[0])
    assert reports[-1]["checkpoint"] == res.checkpoint  # the last report carries the checkpoint (for Ray)
    # the model learns: the smoothed patient loss falls over 40 steps (seeded, deterministic)
    assert reports[-1]["loss_patient"] < reports[0]["loss_patient"]


def test_checkpoint_round_trip_gives_the_same_outputs(synthetic_data, tmp_path):
    res = fit(synthetic_data, CFG, tmp_path, device="cpu")
    model, meta = load_model(res.checkpoint)
    model2, _ = load_model(tmp_path)  # a folder works too
    assert meta["step"] == 6 and meta["format"] == FORMAT
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, _ = model(x, "donor")
        b, _ = model2(x, "donor")
    torch.testing.assert_close(a, b)
    blob = torch.load(res.checkpoint, weights_only=True)  # plain tensors and numbers only
    assert set(blob) >= {"model", "model_avg", "optimizer", "step", "elapsed_s", "spec"}
    # conversion uses the running average of the weights; the raw weights are there too
    raw, _ = load_model(res.checkpoint, averaged=False)
    k = next(iter(blob["model"]))
    assert torch.equal(raw.state_dict()[k], blob["model"][k]) and torch.equal(model.state_dict()[k], blob["model_avg"][k])
    assert any(not torch.equal(blob["model"][n], blob["model_avg"][n]) for n in blob["model"])


def test_resume_continues_the_step_budget(synthetic_data, tmp_path):
    first = fit(synthetic_data, dataclasses.replace(CFG, max_steps=4), tmp_path, device="cpu")
    before = load_checkpoint(first.checkpoint)["model"]
    second = fit(synthetic_data, dataclasses.replace(CFG, max_steps=9), tmp_path, resume_from=first.checkpoint, device="cpu")
    assert (first.steps, second.steps) == (4, 9)
    after = load_checkpoint(second.checkpoint)
    assert after["step"] == 9 and after["elapsed_s"] >= first.elapsed_s
    assert any(not torch.equal(before[k], after["model"][k]) for k in before)
    # resuming a finished run does nothing more
    third = fit(synthetic_data, dataclasses.replace(CFG, max_steps=9), tmp_path, resume_from=second.checkpoint, device="cpu")
    assert third.steps == 9


def test_init_from_starts_from_weights_but_not_from_their_step_count(synthetic_data, tmp_path):
    a = fit(synthetic_data, dataclasses.replace(CFG, max_steps=5), tmp_path / "a", device="cpu")
    b = fit(synthetic_data, dataclasses.replace(CFG, max_steps=2), tmp_path / "b", init_from=a.checkpoint, device="cpu")
    assert b.steps == 2


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    p = tmp_path / CHECKPOINT
    torch.save({"format": FORMAT, "evil": Path("/")}, p)  # an arbitrary object: needs unpickling
    with pytest.raises(ModelWeightsError, match="not a loadable swap checkpoint"):
        load_checkpoint(p)
    torch.save({"format": "other"}, p)
    with pytest.raises(ModelWeightsError, match="not a deid swap checkpoint"):
        load_checkpoint(p)
    with pytest.raises(ModelWeightsError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_resume_with_another_architecture_is_refused(synthetic_data, tmp_path):
    res = fit(synthetic_data, dataclasses.replace(CFG, max_steps=1), tmp_path, device="cpu")
    other = dataclasses.replace(synthetic_data, patient=synthetic_data.patient)
    from deid.swap.spec import ModelSpec

    wider = ModelSpec(size=32, enc_channels=(8, 16, 32), dense=64, enc_up=16, dec_channels=(8, 8), batch_size=4)
    with pytest.raises(ConfigError, match="same preset"):
        fit(other, dataclasses.replace(CFG, max_steps=2), tmp_path, resume_from=res.checkpoint, spec=wider, device="cpu")


def test_training_data_is_checked(synthetic_data):
    few = synthetic_data.patient.subset(np.arange(3))
    with pytest.raises(InvalidInputError, match="patient face set has 3"):
        TrainData(few, synthetic_data.donor)
    with pytest.raises(InvalidInputError, match="px"):
        fit(synthetic_data, SwapConfig(preset="small", max_steps=1), "/nonexistent-never-created")


def test_a_budget_is_required():
    with pytest.raises(ConfigError, match="budget"):
        SwapConfig(max_minutes=0, max_steps=0)


@pytest.mark.parametrize("slow_threads, best", [(2, 1), (1, 2)])
def test_thread_tuner_picks_the_faster_thread_count(slow_threads, best):
    from deid.swap.train import ThreadTuner

    tuner = ThreadTuner(2, every=40, probe=4, warm=5)
    for _ in range(5):  # warm-up: one thread, no probing
        assert tuner.next_threads() == 1
        tuner.record(1, 0.5)
    for _ in range(20):
        n = tuner.next_threads()
        tuner.record(n, 1.0 if n == slow_threads else 0.2)
    assert tuner.best == best and tuner.probes == 1
    assert ThreadTuner(1).next_threads() == 1  # nothing to choose from


def test_thread_tuner_re_probes_when_steps_slow_down():
    from deid.swap.train import ThreadTuner

    tuner = ThreadTuner(2, every=1000, probe=3, warm=0)
    for _ in range(6):
        n = tuner.next_threads()
        tuner.record(n, 0.2 if n == 2 else 0.4)  # idle machine: two threads win
    assert tuner.best == 2 and tuner.probes == 1
    for _ in range(3):  # another job takes a core: two threads become 5x slower
        n = tuner.next_threads()
        assert n == 2
        tuner.record(n, 1.0)
    for _ in range(6):
        n = tuner.next_threads()
        tuner.record(n, 1.0 if n == 2 else 0.4)
    assert tuner.probes == 2 and tuner.best == 1
