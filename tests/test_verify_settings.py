"""deid verify on outputs a QA pass made with settings that leave the leak audit out."""

from deid.cli import main
from deid.testing import make_synthetic_video
from deid.verify import verify_folder
from test_cli import FAKES


def test_an_output_written_without_the_leak_audit_is_not_ready_to_share(tmp_path, capsys):
    """README: `deid verify` exit 0 = every video audited, unchanged, leak-free. An output
    made with audit.leak_check=false passed no leak audit: it must fail the folder, not
    pass it with a warning (a 24-block pixelation the audit refuses passed that way)."""
    src = tmp_path / "in" / "clip.mp4"
    src.parent.mkdir()
    make_synthetic_video(src, n_frames=8)
    out = tmp_path / "out"
    assert main(["anonymize", str(src), "--out", str(out), "-m", "blur", "--set", "io.output_names=pseudonym",
                 "--set", "audit.leak_check=false", *FAKES]) == 0
    rep = verify_folder(out)
    blur = next(out.glob("*.blur.mp4"))
    assert not rep.ok and rep.outputs == 1
    assert [(f.path, f.what.split(" (")[0]) for f in rep.errors] == [(blur.name, "not leak-audited")]
    capsys.readouterr()
    assert main(["verify", str(out)]) == 1
    assert "NOT ready to share" in capsys.readouterr().out


def test_the_names_warning_says_the_records_hold_the_input_paths(tmp_path):
    """With io.output_names=input the outputs are named clip.blur.mp4, but each audit
    record holds the input's path (here a folder naming the patient): the warning that
    asks to check file and folder names must say so, or the folder looks clean."""
    src = tmp_path / "Doe_John_MRN12345" / "clip.mp4"
    src.parent.mkdir()
    make_synthetic_video(src, n_frames=8)
    out = tmp_path / "out"
    assert main(["anonymize", str(src), "--out", str(out), "-m", "blur", *FAKES]) == 0
    assert not any("Doe_John" in p.name for p in out.rglob("*"))  # nothing in the names shows it
    warn = [f.what for f in verify_folder(out).warnings if "named after their inputs" in f.what]
    assert len(warn) == 1 and "Doe_John_MRN12345" in warn[0] and "audit records" in warn[0]


def test_a_weaker_than_calibrated_method_and_an_audit_that_compared_nothing_are_warned_about(tmp_path, caplog):
    """qa: a 12-block pixelation (calibrated: 5) passed the leak audit though a person could
    see the face, and an audit whose input faces were all "too small" found faces in 23
    output frames and called it "no leak": verify said ready to share without a word."""
    import json
    import logging

    src = tmp_path / "clip.mp4"
    make_synthetic_video(src, n_frames=8)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert main(["anonymize", str(src), "--out", str(out), "-m", "pixelate,blur", "--set", "anonymize.pixelate.blocks=12",
                     *FAKES]) == 0
    assert "anonymize.pixelate.blocks=12 (calibrated default 5)" in caplog.text
    warned = {f.path: f.what for f in verify_folder(out).warnings if "calibrated default" in f.what}
    assert list(warned) == ["clip.pixelate.mp4"] and "weaker pixelate" in warned["clip.pixelate.mp4"]
    rec_path = out / "clip.blur.audit.json"
    rec = json.loads(rec_path.read_text())
    rec["leak_audit"].update(verifiable_faces=0, output_faces_found=3, leaks=0)
    rec_path.write_text(json.dumps(rec))
    rep = verify_folder(out)
    compared = [f for f in rep.warnings if "compared nothing" in f.what]
    assert rep.ok and [f.path for f in compared] == ["clip.blur.mp4"] and "in 3 of its output frames" in compared[0].what
