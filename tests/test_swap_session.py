"""Swap sessions: the patient's model lives in a private 0700 directory and is deleted
afterwards; consent is checked first; the pipeline and the CLI run a swap end to end
on synthetic clips (fake detector / landmarks / identity, tiny model)."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from deid.config import Config
from deid.errors import ConsentError
from deid.swap.donors import Consent, DonorLibrary
from deid.swap.session import private_dir, swap_session
from deid.swap.testing import SyntheticLandmarker, write_synthetic_donor
from deid.testing import ColorFaceDetector, PatchIdentityEncoder, fake_components, make_synthetic_video

CONSENT = "kind: person\nwho: Test Donor\ngiven: 2024-01-01\nscope: [face-swap-donor]\nexpires: {exp}\n"


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    d = tmp_path_factory.mktemp("session")
    clip = make_synthetic_video(d / "patient.mp4", n_frames=24, width=320, height=240)
    lib = DonorLibrary(d / "donors")
    frames = write_synthetic_donor(d / "donor_frames", n=16, width=320, height=240)
    lib.add("donor-ok", [frames], Consent.parse(CONSENT.format(exp="2099-01-01")))
    bad = d / "donors" / "donor-expired"
    (bad / "media").mkdir(parents=True)
    (bad / "consent.yaml").write_text(CONSENT.format(exp="2020-01-01"))
    return {"clip": clip, "lib": lib, "dir": d}


def _cfg(work: Path, donor: str = "donor-ok", *more: str) -> Config:
    return Config().replace(
        "swap.preset=tiny", "swap.max_steps=3", "swap.max_minutes=0", f"swap.donor={donor}", f"swap.workdir={work}", "swap.landmarks=synthetic",
        "swap.donor_pretrain_minutes=0", *more
    )


def _session(material, cfg):
    return swap_session(
        [material["clip"].path], cfg, identity=PatchIdentityEncoder(), detector=ColorFaceDetector(), landmarker=SyntheticLandmarker(), library=material["lib"]
    )


def test_model_is_private_while_alive_and_deleted_after(material, tmp_path):
    work = tmp_path / "work"
    with _session(material, _cfg(work)) as anon:
        dirs = list(work.iterdir())
        assert len(dirs) == 1
        d = dirs[0]
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        assert (d / "model.pt").is_file() and (d / "references.npy").is_file() and (d / "faces" / "patient.npz").is_file()
        info = json.loads((d / "session.json").read_text())
        assert info["donor"] == "donor-ok" and info["train_steps"] == 3 and info["patient_faces"] >= 8
        assert anon.name == "swap" and anon.stats()["donor"] == "donor-ok"
    assert not d.exists() and list(work.iterdir()) == []


def test_model_is_deleted_when_the_session_fails(material, tmp_path):
    work = tmp_path / "work"
    with pytest.raises(RuntimeError, match="boom"):
        with _session(material, _cfg(work)):
            assert len(list(work.iterdir())) == 1
            raise RuntimeError("boom")
    assert list(work.iterdir()) == []


def test_keep_model_keeps_it_with_a_warning(material, tmp_path, caplog):
    work = tmp_path / "work"
    with caplog.at_level(logging.WARNING):
        with _session(material, _cfg(work, "donor-ok", "swap.keep_model=true")):
            pass
    kept = list(work.iterdir())
    assert len(kept) == 1 and (kept[0] / "model.pt").is_file()
    assert "keep_model" in caplog.text and str(kept[0]) in caplog.text


def test_expired_or_missing_donor_is_refused_before_anything_is_written(material, tmp_path):
    work = tmp_path / "work"
    for donor, msg in (("donor-expired", "expired"), ("nobody", "not found"), ("", "no donor chosen")):
        with pytest.raises(ConsentError, match=msg):
            with _session(material, _cfg(work, donor)):
                pytest.fail("the session must not start")
        assert not work.exists() or list(work.iterdir()) == []


def test_private_dir_refuses_an_output_directory(tmp_path):
    from deid.errors import InvalidInputError

    out = tmp_path / "out"
    with pytest.raises(InvalidInputError, match="output directory"):
        private_dir(out / "models", forbid=[out])
    assert not out.exists(), "refused before anything is created there"
    d = private_dir(tmp_path / "elsewhere", forbid=[out])
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_pipeline_swaps_and_never_writes_the_model_into_the_output(material, tmp_path):
    from deid.pipeline import process_video

    work, out = tmp_path / "work", tmp_path / "out"
    cfg = _cfg(work, "donor-ok", "detect.backend=color", "track.pose_fallback=false", "audit.on_leak=flag")
    with _session(material, cfg) as anon:
        comp = fake_components(cfg, ["swap"], anonymizers={"swap": anon})
        res = process_video(material["clip"].path, out, ["swap"], cfg, components=comp)
    assert res.status == "done", res.error
    stats = res.outputs[0].anonymizer_stats
    assert stats["faces"] > 0 and stats["faces"] == stats["faces_swapped"] + stats["faces_masked_gate"] + stats["faces_masked_swap_failed"] + stats["faces_other"]
    assert stats["donor"] == "donor-ok" and stats["patient_model"].startswith("deleted")
    audit = json.loads(Path(res.outputs[0].audit_path).read_text())
    assert json.dumps(audit).count("faces_swapped") >= 1  # the counts reach the audit record
    names = [p.name for p in out.rglob("*")]
    assert not any(n.endswith((".pt", ".npz", ".npy")) or n.startswith("deid-swap-") for n in names), names
    assert list(work.iterdir()) == []


def test_cli_swap_train_writes_a_private_model_folder(material, tmp_path, monkeypatch, capsys, caplog):
    from deid.cli import main

    monkeypatch.setenv("DEID_DONORS", str(material["lib"].root))
    out = tmp_path / "model"
    args = [
        "swap", "train", "--patient", str(material["clip"].path), "--donor", "donor-ok", "--out", str(out), "--steps", "2", "--preset", "tiny",
        "--no-progress", "--set", "swap.max_minutes=0", "--set", "detect.backend=color", "--set", "audit.identity_backend=patch",
            "--set", "swap.landmarks=synthetic", "--set", "swap.donor_pretrain_minutes=0",
    ]  # fmt: skip
    assert main(args) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o700 and (out / "model.pt").is_file()
    assert all(stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600) for p in out.rglob("*")), \
        "the model, face crops and previews are the owner's alone"
    assert "swap.model_dir=" in capsys.readouterr().out
    assert main(args) == 1  # not empty: refuses to overwrite without --resume
    assert "not empty" in capsys.readouterr().err
    unknown = [a if a != "donor-ok" else "nobody" for a in args]
    unknown[unknown.index(str(out))] = str(tmp_path / "refused")
    assert main(unknown) == 1 and "not found" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists(), "a refused donor leaves no model folder"
    assert main(args + ["--resume", "--steps", "4"]) == 0
    info = json.loads((out / "session.json").read_text())
    assert info["train_steps"] == 4
    # the folder converts through the registry (swap.model_dir)
    from deid.anonymize import build_anonymizer
    from deid.testing import draw_frame

    anon = build_anonymizer("swap", Config().replace(f"swap.model_dir={out}", "swap.landmarks=synthetic", "audit.identity_backend=patch"))
    img, _ = draw_frame(0, 4, 160, 120)
    assert anon.apply(img, []).shape == img.shape
    np.testing.assert_array_equal(np.load(out / "references.npy").shape[1:], (67,))
    # a kept model on a video it was not trained on is warned about; once its donor's
    # consent is revoked it is refused, though it was trained while the consent held
    from deid.swap.session import check_kept_model
    from deid.testing import make_synthetic_video

    cfg = Config().replace(f"swap.model_dir={out}", "swap.landmarks=synthetic", "audit.identity_backend=patch")
    other = make_synthetic_video(tmp_path / "someone_else.mp4", n_frames=6)
    with caplog.at_level(logging.WARNING):
        check_kept_model(out, cfg, [material["clip"].path])
        assert not [r for r in caplog.records if "trained on other" in r.getMessage()]
        check_kept_model(out, cfg, [other.path])
        assert any("was trained on other video(s)" in r.getMessage() for r in caplog.records)
    consent = material["lib"].path("donor-ok") / "consent.yaml"
    saved = consent.read_text()
    try:
        consent.write_text(saved.replace("revoked: false", "") + "\nrevoked: true\n")
        with pytest.raises(ConsentError, match="revoked"):
            build_anonymizer("swap", cfg)
        assert main(["anonymize", str(material["clip"].path), "--out", str(tmp_path / "o"), "-m", "swap", "--no-progress",
                     "--set", f"swap.model_dir={out}", "--set", "detect.backend=color", "--set", "audit.identity_backend=patch",
                     "--set", "swap.landmarks=synthetic"]) == 1
        assert "revoked" in capsys.readouterr().err and not list((tmp_path / "o").glob("*.mp4"))
    finally:
        consent.write_text(saved)


def test_first_use_of_a_donor_builds_its_pretraining_and_later_sessions_start_from_it(material, tmp_path):
    from deid.swap.pretrain import pretrained_path
    from deid.swap.spec import preset

    donor = material["lib"].get("donor-ok")
    cache = pretrained_path(donor, preset("tiny"))
    cache.unlink(missing_ok=True)
    work = tmp_path / "work"
    with _session(material, _cfg(work, "donor-ok", "swap.donor_pretrain_minutes=0.01")) as anon:
        d = next(work.iterdir())
        assert json.loads((d / "session.json").read_text())["init_from_donor_pretrain"] is True
        assert anon.stats()["train_steps"] == 3
    assert cache.is_file()  # cached with the donor (consented material), not in the session dir
    blob = __import__("torch").load(cache, weights_only=True)
    assert blob["optimizer"] == {} and blob["meta"]["donor"] == "donor-ok"
    assert list(work.iterdir()) == []


def test_cli_anonymize_method_swap_end_to_end(material, tmp_path, capsys):
    """`deid anonymize --method swap,blur --donor NAME`: one analysis pass, a model trained
    for the video and deleted afterwards, both outputs published with their audits."""
    from deid.cli import main

    work, out = tmp_path / "work", tmp_path / "out"
    sets = [
        "detect.backend=color", "track.pose_fallback=false", "audit.identity_backend=patch", "audit.on_leak=flag",
        "swap.landmarks=synthetic", "swap.preset=tiny", "swap.max_steps=3", "swap.max_minutes=0", "swap.donor_pretrain_minutes=0",
        f"swap.donor_library={material['lib'].root}", f"swap.workdir={work}",
    ]  # fmt: skip
    args = ["anonymize", str(material["clip"].path), "--out", str(out), "--method", "swap,blur", "--donor", "donor-ok", "--no-progress", "--json"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out)[0]
    assert res["status"] == "done"
    by = {o["method"]: o for o in res["outputs"]}
    assert Path(by["swap"]["path"]).is_file() and Path(by["blur"]["path"]).is_file()
    assert by["swap"]["anonymizer_stats"]["faces"] > 0 and by["swap"]["anonymizer_stats"]["donor"] == "donor-ok"
    assert list(work.iterdir()) == []
    # a donor without valid consent: the video fails with the consent error, nothing is written
    args2 = [a if a != "donor-ok" else "donor-expired" for a in args] + ["--overwrite"]
    assert main(args2) == 1
    assert "expired" in capsys.readouterr().err


def test_cli_donor_pretrain_caches_and_continues(material, monkeypatch, capsys):
    from deid.cli import main
    from deid.swap.pretrain import pretrained_path
    from deid.swap.spec import preset
    from deid.swap.train import load_checkpoint

    monkeypatch.setenv("DEID_DONORS", str(material["lib"].root))
    args = ["donor", "pretrain", "donor-ok", "--minutes", "0.01", "--preset", "tiny", "--set", "swap.landmarks=synthetic", "--set", "detect.backend=color"]
    cache = pretrained_path(material["lib"].get("donor-ok"), preset("tiny"))
    cache.unlink(missing_ok=True)
    assert main(args) == 0 and str(cache) in capsys.readouterr().out
    first = load_checkpoint(cache)["step"]
    assert main(args) == 0  # a second call continues from the cached weights
    assert load_checkpoint(cache)["step"] > first


def test_a_stopped_pretraining_keeps_the_steps_it_did(material, monkeypatch):
    """Ctrl-C during `deid donor pretrain` keeps the steps done so far (the cache holds
    more steps than before the run) and the interrupt still goes on up."""
    import deid.swap.train as train
    from deid.swap.pretrain import pretrain_donor, pretrained_path
    from deid.swap.spec import preset
    from deid.swap.train import load_checkpoint

    donor = material["lib"].get("donor-ok")
    cache = pretrained_path(donor, preset("tiny"))
    cache.unlink(missing_ok=True)
    cfg = _cfg(Path("unused"))
    pretrain_donor(donor, cfg, minutes=0, steps=2, detector=ColorFaceDetector(), landmarker=SyntheticLandmarker())
    assert load_checkpoint(cache)["step"] == 2
    real, calls = train.make_batch, {"n": 0}

    def batch_then_stop(*a, **k):  # two batches a step: stopped in the middle of the 4th step
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train, "make_batch", batch_then_stop)
    with pytest.raises(KeyboardInterrupt):
        pretrain_donor(donor, cfg, minutes=0, steps=100, detector=ColorFaceDetector(), landmarker=SyntheticLandmarker())
    kept = load_checkpoint(cache)
    assert kept["step"] == 5 and kept["optimizer"] == {}  # 2 before + 3 whole steps of this run
    assert not list(cache.parent.glob("*.part"))


def test_a_killed_sessions_directory_is_deleted_by_the_next_session(tmp_path):
    import json
    import socket
    import subprocess
    import sys

    from deid.swap.session import OWNER_FILE, private_dir

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    host = socket.gethostname()

    def session(name, **owner):
        d = tmp_path / name
        (d / "faces").mkdir(parents=True)
        (d / "faces" / "patient.npz").write_bytes(b"crops")
        if owner:
            (d / OWNER_FILE).write_text(json.dumps(owner))
        return d

    dead = session("deid-swap-dead", pid=int(gone.stdout), host=host)
    live = session("deid-swap-live", pid=os.getpid(), host=host)
    kept = session("deid-swap-kept", pid=int(gone.stdout), host=host, kept=True)
    elsewhere = session("deid-swap-other", pid=int(gone.stdout), host=host + "-elsewhere")
    unknown = session("deid-swap-bench-x")  # no owner record: not ours to judge
    new = private_dir(tmp_path)
    assert not dead.exists()
    assert live.exists() and kept.exists() and elsewhere.exists() and unknown.exists()
    assert json.loads((new / OWNER_FILE).read_text())["pid"] == os.getpid()


def test_the_cli_refuses_a_swap_workdir_inside_the_output_folder(tmp_path):
    from deid.batch import _swap_session
    from deid.errors import InvalidInputError

    out = tmp_path / "out"
    cfg = Config().replace(f"swap.workdir={out / 'models'}", "swap.donor=demo-carphone", "swap.gate=false")
    with pytest.raises(InvalidInputError, match="inside the output directory"):
        with _swap_session(tmp_path / "v.mp4", cfg, out):
            pass
    assert not any((out / "models").glob("deid-swap-*"))


def test_an_output_that_cannot_be_written_is_refused_before_the_patient_model_is_trained(material, tmp_path, capsys, monkeypatch):
    """An existing swap output without --overwrite fails at once: no minutes of training on
    the patient's faces (and no patient data in a work folder) for an output refused after."""
    import deid.batch
    from deid.cli import main

    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    (out / f"{material['clip'].path.stem}.swap.mp4").write_bytes(b"an earlier output")
    trained = []
    real = deid.batch._swap_session

    def spy(*a, **k):
        trained.append(a)
        return real(*a, **k)

    monkeypatch.setattr(deid.batch, "_swap_session", spy)
    args = ["anonymize", str(material["clip"].path), "--out", str(out), "--method", "swap,blur", "--donor", "donor-ok", "--no-progress"]
    for s in ("detect.backend=color", "track.pose_fallback=false", "audit.identity_backend=patch", "swap.landmarks=synthetic",
              "swap.preset=tiny", "swap.max_steps=3", "swap.max_minutes=0", "swap.donor_pretrain_minutes=0",
              f"swap.donor_library={material['lib'].root}", f"swap.workdir={work}"):
        args += ["--set", s]
    assert main(args) == 1
    assert "output exists" in capsys.readouterr().err
    assert trained == [], "the patient's model was trained for an output that was then refused"
    assert not work.exists() or list(work.iterdir()) == []
    assert not (out / f"{material['clip'].path.stem}.blur.mp4").exists()


def test_swap_train_resume_refuses_another_donor_and_keeps_every_patient_video_in_the_record(material, tmp_path, monkeypatch, capsys):
    """A kept model's record names the donor whose consent its later use is checked
    against: a --resume against another donor would leave weights trained on the first
    donor's face under the second donor's name (the first's revocation then never
    refuses it). The videos of every run stay in the record."""
    from deid.cli import main
    from deid.testing import make_synthetic_video

    lib = DonorLibrary(tmp_path / "donors")
    frames = write_synthetic_donor(tmp_path / "donor_frames", n=16, width=320, height=240)
    for name in ("donor-a", "donor-b"):
        lib.add(name, [frames], Consent.parse(CONSENT.format(exp="2099-01-01")))
    monkeypatch.setenv("DEID_DONORS", str(lib.root))
    out = tmp_path / "model"
    more = make_synthetic_video(tmp_path / "visit2.mp4", n_frames=26, width=320, height=240)

    def train(video, donor, *extra):
        return main(["swap", "train", "--patient", str(video), "--donor", donor, "--out", str(out), "--steps", "2", "--preset", "tiny",
                     "--no-progress", "--set", "swap.max_minutes=0", "--set", "detect.backend=color", "--set", "audit.identity_backend=patch",
                     "--set", "swap.landmarks=synthetic", "--set", "swap.donor_pretrain_minutes=0", *extra])

    assert train(material["clip"].path, "donor-a") == 0
    first = json.loads((out / "session.json").read_text())
    capsys.readouterr()
    assert train(material["clip"].path, "donor-b", "--resume", "--steps", "4") == 1
    err = capsys.readouterr().err
    assert "trained against donor 'donor-a'" in err and "Traceback" not in err
    assert json.loads((out / "session.json").read_text()) == first, "the refused resume left the record as it was"
    (out / "session.json").rename(tmp_path / "session.json")  # a folder whose record is lost: whose donor is unknown
    assert train(material["clip"].path, "donor-a", "--resume", "--steps", "4") == 1
    err = capsys.readouterr().err
    assert "does not say which donor" in err and "Traceback" not in err and not (out / "session.json").exists()
    (tmp_path / "session.json").rename(out / "session.json")
    assert train(more.path, "donor-a", "--resume", "--steps", "4") == 0
    info = json.loads((out / "session.json").read_text())
    assert info["donor"] == "donor-a" and info["train_steps"] == 4
    assert info["patient_inputs_sha256"][0] == first["patient_inputs_sha256"][0] and len(info["patient_inputs_sha256"]) == 2


def test_a_donor_who_is_the_patient_is_refused(tmp_path, monkeypatch):
    """A donor registered from the patient's own video, or whose faces are the patient's:
    a swap onto the patient's face de-identifies nothing (qa: 173 of 200 faces of such a
    blurry early model passed the gate). Refused before training; another person passes."""
    from types import SimpleNamespace

    import numpy as np

    import deid.evaluate.references as refs
    from deid.errors import InvalidInputError
    from deid.pipeline import sha256_file
    from deid.swap.session import check_donor_is_not_patient
    from deid.testing import make_synthetic_video

    patient = make_synthetic_video(tmp_path / "patient.mp4", n_frames=6).path
    other = make_synthetic_video(tmp_path / "other.mp4", n_frames=7).path
    ident = SimpleNamespace(threshold=0.6, distance=lambda a, b: np.linalg.norm(a[:, None] - b[None], axis=-1))
    me = np.zeros((4, 3), np.float32)
    with pytest.raises(InvalidInputError, match="patient's own video"):
        check_donor_is_not_patient(SimpleNamespace(name="d", media=(Path(patient),)), [sha256_file(patient)], me, ident, None)
    donor = SimpleNamespace(name="d", media=(Path(other),))
    monkeypatch.setattr(refs, "identity_embeddings", lambda *a, **k: me + 0.1)
    with pytest.raises(InvalidInputError, match="its faces are the patient's"):
        check_donor_is_not_patient(donor, [sha256_file(patient)], me, ident, None)
    monkeypatch.setattr(refs, "identity_embeddings", lambda *a, **k: me + 1.0)
    check_donor_is_not_patient(donor, [sha256_file(patient)], me, ident, None)  # another person
    check_donor_is_not_patient(donor, [sha256_file(patient)], me[:0], ident, None)  # no references: the gate decides


@pytest.mark.parametrize("gate", ["true", "false"])
def test_a_donor_who_is_the_patient_is_refused_with_the_gate_off_too(tmp_path, gate):
    """The donor-is-patient check compares with the patient's reference embeddings, which
    were taken only for the identity gate: with swap.gate=false there were none, and a
    donor registered from another recording of the patient trained a swap onto the
    patient's own face (docs/swap.md: refused before training, whatever the gate)."""
    from deid.errors import InvalidInputError

    clip = make_synthetic_video(tmp_path / "patient.mp4", n_frames=24, width=320, height=240)
    again = make_synthetic_video(tmp_path / "again.mp4", n_frames=20, width=320, height=240)  # the same face, other bytes
    lib = DonorLibrary(tmp_path / "donors")
    lib.add("self", [again.path], Consent.parse(CONSENT.format(exp="2099-01-01")))
    cfg = _cfg(tmp_path / "work", "self", "audit.identity_backend=patch", f"swap.gate={gate}")
    with pytest.raises(InvalidInputError, match="its faces are the patient's"):
        with swap_session([clip.path], cfg, detector=ColorFaceDetector(), landmarker=SyntheticLandmarker(), library=lib):
            pass
    assert list((tmp_path / "work").iterdir()) == []


def test_an_interrupted_training_s_folder_is_not_a_kept_model(material, tmp_path, monkeypatch):
    """session.json is written before training (whose folder it is, for --resume): an
    interrupted training's folder, with its checkpoint, then passed check_kept_model as
    a finished model (it used to have no session.json, and was refused). It is refused
    until a resume finishes it."""
    import deid.swap.train as T
    from deid.errors import InvalidInputError
    from deid.swap.session import check_kept_model, train_patient_model

    monkeypatch.setenv("DEID_DONORS", str(material["lib"].root))
    out = tmp_path / "model"
    out.mkdir()
    cfg = _cfg(tmp_path / "work", "donor-ok", "audit.identity_backend=patch", f"swap.donor_library={material['lib'].root}")
    real = T.fit

    def interrupted(data, sc, out_dir, **kw):
        (Path(out_dir) / T.CHECKPOINT).write_bytes(b"a checkpoint of a few steps")
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_patient_model([material["clip"].path], cfg, out, detector=ColorFaceDetector(), landmarker=SyntheticLandmarker())
    assert json.loads((out / "session.json").read_text())["donor"] == "donor-ok"
    with pytest.raises(InvalidInputError, match="did not finish"):
        check_kept_model(out, cfg, [material["clip"].path])
    monkeypatch.setattr(T, "fit", real)
    (out / T.CHECKPOINT).unlink()
    train_patient_model([material["clip"].path], cfg, out, detector=ColorFaceDetector(), landmarker=SyntheticLandmarker(), resume=True)
    assert check_kept_model(out, cfg, [material["clip"].path])["donor"] == "donor-ok"
