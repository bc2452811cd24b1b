"""User-supplied model files that are corrupt: one clear error naming the setting or
environment variable to fix, never a traceback from onnxruntime or OpenCV."""

import pytest

from deid.errors import ModelWeightsError


@pytest.mark.parametrize("registry, name, kwargs, env", [
    ("DETECTORS", "scrfd", "model_path", "DEID_SCRFD_MODEL"),
    ("POSE_ESTIMATORS", "rtmpose", "model_path", "DEID_RTMPOSE_MODEL"),
    ("POSE_ESTIMATORS", "openpose", "model_path", "DEID_OPENPOSE_MODEL"),
    ("IDENTITY_ENCODERS", "arcface", "model_path", "DEID_ARCFACE_MODEL"),
])
def test_a_corrupt_model_file_is_one_error_naming_its_setting(tmp_path, registry, name, kwargs, env):
    import deid.registry as reg

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 this is not a model " * 20)
    with pytest.raises(ModelWeightsError) as e:
        getattr(reg, registry).create(name, **{kwargs: str(bad)})
    msg = str(e.value)
    assert "bad.onnx" in msg and env in msg and "\n" not in msg, msg


def test_a_missing_model_says_which_setting_reaches_the_tracker(monkeypatch):
    """track.pose_backend / audit.identity_backend build their models from the
    environment variable only: the message must not send users to the evaluation's key
    alone."""
    import deid.registry as reg

    monkeypatch.delenv("DEID_RTMPOSE_MODEL", raising=False)
    monkeypatch.delenv("DEID_ARCFACE_MODEL", raising=False)
    with pytest.raises(ModelWeightsError, match="the tracker's pose fallback.*evaluate.pose.model_path \\(the evaluation only\\)"):
        reg.POSE_ESTIMATORS.create("rtmpose", keep_outside=True)
    with pytest.raises(ModelWeightsError, match="the leak audit.*evaluate.identity.model_path \\(the evaluation only\\)"):
        reg.IDENTITY_ENCODERS.create("arcface")
