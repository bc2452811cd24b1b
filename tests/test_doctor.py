"""deid doctor: builds the models a run would build, runs a tiny clip end to end, and
fails (exit 1) naming what is wrong."""

import json
import threading

from deid._quiet import native_stderr_silenced
from deid.cli import main


def _doctor(capsys, *argv):
    rc = main(["doctor", "--json", *argv])
    return rc, {c["check"]: c for c in json.loads(capsys.readouterr().out)["checks"]}


def test_doctor_builds_the_default_models_and_runs_a_clip_end_to_end(capsys):
    rc, checks = _doctor(capsys)
    assert rc == 0, {k: c["detail"] for k, c in checks.items() if not c["ok"]}
    assert "mediapipe + centerface" in checks["pipeline models"]["detail"]
    assert "leak audit dlib" in checks["pipeline models"]["detail"]
    assert checks["end-to-end run"]["ok"] and "12 frames in, 12 out" in checks["end-to-end run"]["detail"]
    assert checks["evaluation models"]["ok"]


def test_doctor_checks_the_models_a_site_config_asks_for(capsys, monkeypatch):
    monkeypatch.delenv("DEID_SCRFD_MODEL", raising=False)
    rc, checks = _doctor(capsys, "--set", "detect.backend=scrfd")
    assert rc == 1
    assert not checks["pipeline models"]["ok"] and "SCRFD model file not found" in checks["pipeline models"]["detail"]
    assert "end-to-end run" not in checks  # nothing to run it with
    assert "detect.backend=scrfd" in checks["configuration"]["detail"]


def test_an_optional_model_variable_pointing_nowhere_is_shown_not_failed(monkeypatch):
    """DEID_RTMPOSE_MODEL set to a file that is not there is a mistake to show (BAD), but
    only a backend the configuration uses fails the run."""
    from deid.commands.doctor import OPTIONAL, _check, _optional_models

    monkeypatch.setenv("DEID_RTMPOSE_MODEL", "/nonexistent/rtmpose.onnx")
    r = _check("optional model files", _optional_models)
    assert not r["ok"] and "DEID_RTMPOSE_MODEL=/nonexistent/rtmpose.onnx MISSING" in r["detail"]
    assert "optional model files" in OPTIONAL
    monkeypatch.delenv("DEID_RTMPOSE_MODEL")
    assert _check("optional model files", _optional_models)["ok"]
    # the person detector and the Caffe prototxt are user files too
    for var in ("DEID_RTMPOSE_DET_MODEL", "DEID_OPENPOSE_PROTO"):
        monkeypatch.setenv(var, "/nonexistent/file")
        r = _check("optional model files", _optional_models)
        assert not r["ok"] and f"{var}=/nonexistent/file MISSING" in r["detail"]
        monkeypatch.delenv(var)


def test_doctor_reports_a_bad_configuration(capsys):
    rc, checks = _doctor(capsys, "--set", "track.no_such_key=1")
    assert rc == 1 and not checks["configuration"]["ok"]
    assert "no_such_key" in checks["configuration"]["detail"]


def test_native_stderr_silencing_nests():
    # a silenced block that builds models which silence their own start-up (deid doctor)
    done = threading.Event()

    def nested():
        with native_stderr_silenced(True):
            with native_stderr_silenced(True):
                pass
        done.set()

    t = threading.Thread(target=nested, daemon=True)
    t.start()
    assert done.wait(5), "nested native_stderr_silenced deadlocked"


def test_one_missing_demo_donor_is_a_note_both_missing_a_failure(monkeypatch):
    import deid.swap.donors as donors
    from deid.commands import doctor

    def gone():
        raise FileNotFoundError("not here")

    names = sorted(donors.BUILTIN_DONORS)
    monkeypatch.setitem(donors.BUILTIN_DONORS, names[0], (donors.BUILTIN_DONORS[names[0]][0], gone))
    r = doctor._check("demo donors", doctor._donor)
    assert r["ok"] and f"{names[0]} not available" in r["detail"] and names[1] in r["detail"]
    monkeypatch.setitem(donors.BUILTIN_DONORS, names[1], (donors.BUILTIN_DONORS[names[1]][0], gone))
    r = doctor._check("demo donors", doctor._donor)
    assert not r["ok"] and "not here" in r["detail"]


def test_doctor_names_a_config_file_that_is_not_utf8(capsys, tmp_path):
    p = tmp_path / "site.yaml"
    p.write_bytes(b"# Station f\xfcr Endoskopie\nio:\n  crf: 22\n")
    rc, checks = _doctor(capsys, "--config", str(p))
    assert rc == 1 and not checks["configuration"]["ok"]
    assert f"config file {p} is not UTF-8 text" in checks["configuration"]["detail"]


def test_the_evaluation_models_are_run_on_a_frame_not_only_built(tmp_path):
    """A user's pose model that loads but fails on its first input (here an ArcFace-shaped
    net given as OpenPose: cv2.dnn reads it, the forward pass fails) is a failed check,
    not 'ok' followed by a failing deid evaluate."""
    from deid.commands.doctor import _check, _evaluation_models
    from deid.config import Config
    from test_identity_contract import make_tiny_arcface

    path = make_tiny_arcface(tmp_path / "w600k_r50.onnx")
    cfg = Config().replace("evaluate.pose.backend=openpose", f"evaluate.pose.model_path={path}", "evaluate.locate_faces=none")
    r = _check("evaluation models", lambda: _evaluation_models(cfg))
    assert not r["ok"] and "w600k_r50.onnx" in r["detail"] and "failed on a" in r["detail"], r


def test_test_doubles_are_not_offered_to_users_and_doctor_fails_them(capsys, caplog):
    """detect.backend=color finds coloured squares on synthetic clips, not faces: doctor said
    "all required checks passed" with it, and every "choose one of" listed it (qa)."""
    import logging

    import pytest

    from deid.config import load_config
    from deid.errors import ConfigError
    from deid.pipeline import Components, backends_for_tests_only
    from deid.registry import DETECTORS, IDENTITY_ENCODERS, POSE_ESTIMATORS

    assert "color" not in DETECTORS.names() and "patch" not in IDENTITY_ENCODERS.names()
    assert "color_pose" not in POSE_ESTIMATORS.names() and "mediapipe" in DETECTORS.names()
    with pytest.raises(ConfigError) as e:
        DETECTORS.get("colour")
    assert "color" not in str(e.value).split("choose one of:")[1]
    rc, checks = _doctor(capsys, "--set", "detect.backend=color", "--set", "detect.extra=")
    assert rc == 1 and not checks["pipeline models"]["ok"]
    assert "detect.backend=color: test double" in checks["pipeline models"]["detail"]
    rc, checks = _doctor(capsys, "--set", "evaluate.identity.backend=patch")
    assert rc == 1 and "evaluate.identity.backend=patch: test double" in checks["evaluation models"]["detail"]
    cfg = load_config(None, ["detect.backend=color", "audit.identity_backend=patch", "track.pose_backend=color_pose",
                             "detect.extra="])
    assert backends_for_tests_only(cfg) == ["detect.backend=color", "track.pose_backend=color_pose",
                                            "audit.identity_backend=patch"]
    assert backends_for_tests_only(load_config()) == []
    with caplog.at_level(logging.WARNING):
        Components.build(cfg, ["blur"])
    assert "for synthetic test clips only" in caplog.text
