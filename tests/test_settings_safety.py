"""Fixes from a second QA pass on the command line and configuration: settings that
silently switched the leak audit off, an empty --config, output names too long for the
file system."""

import json
import logging

import pytest

from deid.config import Config, load_config, weakened_audit
from deid.errors import ConfigError
from deid.verify import verify_folder
from test_verify import release


@pytest.mark.parametrize(
    "override, key",
    [
        ("audit.threshold=0", "audit.threshold"),  # no distance is below 0: no face is ever a match
        ("audit.threshold=-1", "audit.threshold"),
        ("audit.threshold=nan", "audit.threshold"),  # every comparison with NaN is false
        ("audit.threshold=inf", "audit.threshold"),
        ("audit.null_margin=5", "audit.null_margin"),  # d < d_null - 5 never holds
        ("audit.null_margin=nan", "audit.null_margin"),
        ("audit.min_face_px=100000", "audit.min_face_px"),  # every face "too small" to check
        ("audit.min_face_px=-1", "audit.min_face_px"),
        ("evaluate.identity.threshold=0", "evaluate.identity.threshold"),
        ("evaluate.pose.min_score=2", "evaluate.pose.min_score"),
    ],
)
def test_settings_that_switch_the_leak_audit_off_are_refused(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_defaults_and_stricter_audits_are_not_weakened():
    assert Config().audit.weakened() == []
    strict = Config().replace("audit.threshold=0.7", "audit.null_margin=0.05", "audit.min_face_px=0")
    assert strict.audit.weakened() == []


def test_a_weaker_audit_is_named_and_warned_about(caplog):
    cfg = Config().replace("audit.threshold=0.3", "audit.min_face_px=200")
    weak = cfg.audit.weakened()
    assert [w.split("=")[0] for w in weak] == ["audit.threshold", "audit.min_face_px"]
    # an old record's value that the config now refuses is weakened too, not a crash
    assert [w.split("=")[0] for w in weakened_audit({"threshold": 0.0, "null_margin": None})] == [
        "audit.threshold", "audit.null_margin"]
    from deid.pipeline import Components

    with caplog.at_level(logging.WARNING, logger="deid"):
        Components.build(cfg.replace("detect.backend=color", "detect.extra=", "track.pose_fallback=false",
                                     "audit.identity_backend=patch"), ["blur"])
    assert "the leak audit is weaker than the default: audit.threshold=0.3" in caplog.text


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return release(tmp_path_factory.mktemp("qa2_verify"), "clip.mp4", n_frames=8)


def test_verify_warns_about_an_output_audited_with_a_threshold_of_zero(released):
    """A record of an output published by a run with audit.threshold=0 (accepted before
    this fix): its 'leaks: 0' proves nothing, and verify used to call the folder ready
    to share without a word."""
    out, _ = released
    a = next(out.glob("*.mask.audit.json"))
    rec = json.loads(a.read_text())
    assert verify_folder(out).warnings == []
    rec["config"]["audit"]["threshold"] = 0.0
    a.write_text(json.dumps(rec))
    rep = verify_folder(out)
    assert [f.path for f in rep.warnings] == [a.name.replace(".audit.json", ".mp4")]
    assert "audit.threshold=0.0" in rep.warnings[0].what


def test_an_empty_config_path_is_an_error_not_the_defaults(tmp_path, capsys):
    """`deid anonymize ... --config "$SITE_CONFIG"` with the variable unset ran on the
    built-in defaults without a word (the site's fixed_regions, its stricter settings
    dropped)."""
    from deid.cli import main

    with pytest.raises(ConfigError, match="--config is empty"):
        load_config("")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    assert load_config(None) == Config()
    rc = main(["anonymize", str(tmp_path / "x.mp4"), "-o", str(tmp_path / "out"), "-m", "blur", "--dry-run",
               "--config", ""])
    assert rc == 1 and "--config is empty" in capsys.readouterr().err


@pytest.mark.parametrize("stem_bytes", [236, 250])
def test_an_input_name_too_long_for_its_outputs_fails_before_any_work(tmp_path, stem_bytes):
    """A 236-byte stem fits as clip.blur.mp4 (245 bytes) but not as its frames table
    (256): the run rendered and audited the whole video, then failed with a traceback
    (OSError: File name too long), and --dry-run had called it planned."""
    from deid.pipeline import process_video
    from deid.testing import make_synthetic_video

    src = tmp_path / ("x" * stem_bytes + ".mp4")
    make_synthetic_video(src, n_frames=4)
    for dry in (True, False):
        r = process_video(src, tmp_path / "out", ["blur"], Config(), dry_run=dry,
                          components=object())  # never built: refused before any work
        assert r.status == "failed" and "more than a file name may hold (255)" in r.error, r.error
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "args, said",
    [
        (["-m", "blur", "--set", "detect.extra=centreface"], "detect.extra: unknown face detector 'centreface'"),
        (["-m", "blur", "--set", "detect.backend=mediapip"], "detect.backend: unknown face detector 'mediapip'"),
        (["-m", "blur", "--set", "audit.identity_backend=arcfce"], "audit.identity_backend: unknown identity encoder"),
        (["-m", "blur", "--set", "track.pose_backend=rtmpse"], "track.pose_backend: unknown pose estimator"),
        (["-m", "swap"], "no donor chosen"),
        (["-m", "swap", "--donor", "nobody"], "donor 'nobody' not found"),
    ],
)
def test_a_dry_run_refuses_what_the_real_run_refuses_before_any_work(tmp_path, capsys, args, said):
    """--dry-run listed these as planned (exit 0); the real run then refused them."""
    from deid.cli import main
    from deid.testing import make_synthetic_video

    src = make_synthetic_video(tmp_path / "clip.mp4", n_frames=4) and tmp_path / "clip.mp4"
    rc = main(["anonymize", str(src), "-o", str(tmp_path / "out"), "--dry-run", "--no-progress",
               "--set", f"swap.donor_library={tmp_path / 'donors'}", *args])
    assert rc == 1 and said in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_wider_blur_feather_is_a_weaker_blur():
    """blur.feather blends the original face into the blur from the region's rim inwards:
    at 0.5 (allowed) the half radius keeps 45 % of the original pixels, and neither the run
    nor deid verify said a word (only blur.strength was compared with the default)."""
    from deid.config import weakened_method

    assert weakened_method("blur", {"blur": {"strength": 0.25, "feather": 0.12}}) == []
    assert weakened_method("blur", {"blur": {"strength": 0.25, "feather": 0.05}}) == []
    assert weakened_method("blur", {"blur": {"strength": 0.25, "feather": 0.5}}) == [
        "anonymize.blur.feather=0.5 (calibrated default 0.12)"]
    assert len(weakened_method("blur", {"blur": {"strength": 0.1, "feather": 0.5}})) == 2


def test_an_arcface_audit_threshold_below_arcfaces_own_is_weakened():
    """With audit.identity_backend=arcface, 0.6 means "ArcFace's own 0.72"; any other value
    is used as given, so 0.65 is a weaker audit than the default one (review)."""
    arc = {"identity_backend": "arcface"}
    assert weakened_audit({**arc, "threshold": 0.6}) == []  # the default: ArcFace's 0.72
    assert weakened_audit({**arc, "threshold": 0.8}) == []
    weak = weakened_audit({**arc, "threshold": 0.65})
    assert len(weak) == 1 and weak[0].startswith("audit.threshold=0.65 (default 0.72")
    assert weakened_audit({"identity_backend": "dlib", "threshold": 0.65}) == []


def test_an_elliptical_pixelation_is_a_weaker_pixelation():
    """Pixelation was calibrated as a box (its default): an ellipse leaves the region's
    corners as they were (review)."""
    from deid.config import weakened_method

    assert weakened_method("pixelate", {"pixelate": {"blocks": 5, "shape": "box"}}) == []
    assert weakened_method("pixelate", {"pixelate": {"blocks": 5, "shape": "ellipse"}}) == [
        "anonymize.pixelate.shape='ellipse' (calibrated default 'box')"]
    assert weakened_method("pixelate", {"pixelate": {"blocks": 5}}) == []  # an older record without the key
    assert weakened_method("blur", {"blur": {"strength": 0.25, "shape": "box"}}) == []  # a box blur hides more
