"""deid.verify / `deid verify`: is an output folder ready to share?"""

import json
import shutil

import pytest

from deid.cli import main
from deid.verify import verify_folder
from deid.testing import make_synthetic_video
from test_cli import FAKES


def release(root, name: str = "Doe_John.mp4", n_frames: int = 12):
    """``(out, src)``: a synthetic clip ``root/in/name`` de-identified (blur, mask) into
    ``root/out`` as `deid anonymize --set io.output_names=pseudonym` leaves it: clean."""
    src = root / "in" / name
    src.parent.mkdir()
    make_synthetic_video(src, n_frames=n_frames)
    out = root / "out"
    assert main(["anonymize", str(src), "--out", str(out), "-m", "blur,mask", "--set", "io.output_names=pseudonym", *FAKES]) == 0
    return out, src


@pytest.fixture()
def released(tmp_path):
    """A folder as `deid anonymize --set io.output_names=pseudonym` leaves it: clean."""
    return release(tmp_path)


def test_a_clean_pseudonymous_folder_passes(released):
    out, _ = released
    rep = verify_folder(out)
    assert rep.ok and rep.outputs == 2 and rep.names == {"pseudonym": 2} and rep.findings == []


def test_each_problem_is_found(released, tmp_path):
    out, src = released
    blur = next(out.glob("*.blur.mp4"))
    mask = next(out.glob("*.mask.mp4"))
    with open(blur, "ab") as fh:  # changed after deid wrote it
        fh.write(b"\0")
    shutil.copy(src, out / "extra.mp4")  # a video deid did not write: the original itself
    (out / "status.parquet").write_bytes(b"PAR1")  # records that name the inputs
    (out / "metrics" / "perframe").mkdir(parents=True)
    for k in range(3):  # the evaluation's tables: one finding for the folder, not one a part
        (out / "metrics" / "perframe" / f"part-{k}.parquet").write_bytes(b"PAR1")
    (out / "metrics" / "run.json").write_text("{}")
    (out / "report.html").write_text("<html>")
    (out / ".x.mp4.partial-123-abcd.mp4").write_bytes(b"")  # an interrupted run's temporary
    (out / "notes.txt").write_text("hello")
    rec = json.loads((out / (mask.name[:-4] + ".audit.json")).read_text())
    rec["leak_audit"] = {"leaks": 2, "leak_frames": [3, 4]}  # published with audit.on_leak=flag
    rec["fail_closed_policy"], rec["counts"]["frames_fail_closed"] = "flag", 3  # frames left as they were
    (out / (mask.name[:-4] + ".audit.json")).write_text(json.dumps(rec))
    rep = verify_folder(out)
    assert not rep.ok and rep.outputs == 2
    errors = {(f.path, f.what.split(" (")[0]) for f in rep.errors}
    assert (blur.name, "changed since deid wrote it") in errors
    assert ("extra.mp4", "no audit record beside it: nothing says deid de-identified it") in errors
    assert any(p == "status.parquet" for p, _ in errors) and any(p == "report.html" for p, _ in errors)
    assert [f.what for f in rep.errors if f.path.startswith("metrics")] == [
        "the evaluation's tables (4 file(s)): they name the inputs; keep them with the originals (deid anonymize --evaluate "
        "--records DIR, or io.output_names=pseudonym, writes them outside the outputs)"]
    assert any(p.startswith(".x.mp4.partial-") for p, _ in errors)
    assert any(p == mask.name and w.startswith("the leak audit found 2 face(s)") for p, w in errors)
    assert any(p == mask.name and w.startswith("3 frame(s) with a person and no head region") for p, w in errors)
    assert [f.path for f in rep.warnings] == ["notes.txt"]
    assert len(rep.errors) == 8
    # the hash check is what finds the changed file
    assert blur.name not in {f.path for f in verify_folder(out, hashes=False).errors}


def test_audio_metadata_and_names_after_inputs_are_reported(tmp_path):
    src = tmp_path / "clip.mp4"
    make_synthetic_video(src, n_frames=10, with_audio=True)
    out = tmp_path / "out"
    assert main(["anonymize", str(src), "--out", str(out), "-m", "blur", "--keep-audio", *FAKES]) == 0
    rep = verify_folder(out)
    assert rep.ok and rep.names == {"input": 1}
    whats = [f.what for f in rep.warnings]
    assert any("audio track" in w for w in whats) and any("named after their inputs" in w for w in whats)
    # an output with identifying metadata (here: the input itself given a record's name) is an error
    shutil.copy(tmp_path / "out" / "clip.blur.audit.json", tmp_path / "out" / "tagged.blur.audit.json")
    make_synthetic_video(tmp_path / "out" / "tagged.blur.mp4", n_frames=10, metadata={"location": "+40.0-074.0/"})
    errs = [f.what for f in verify_folder(out, hashes=False).errors if f.path == "tagged.blur.mp4"]
    assert errs and errs[0].startswith("identifying container metadata")


def test_cli_exit_codes(released, capsys):
    out, _ = released
    assert main(["verify", str(out)]) == 0
    assert "2 de-identified video(s) verified; 0 error(s), 0 warning(s): ready to share" in capsys.readouterr().out
    (out / "notes.txt").write_text("hello")
    assert main(["verify", str(out)]) == 0 and main(["verify", "--strict", str(out)]) == 1
    capsys.readouterr()
    assert main(["verify", "--json", str(out)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] and d["findings"][0]["path"] == "notes.txt"
    assert main(["verify", str(out / "notes.txt")]) == 1
    assert "not a folder" in capsys.readouterr().err


def test_a_folder_without_de_identified_videos_is_not_ready(tmp_path, capsys):
    """An empty or mistyped folder (or one holding only files deid did not write) must
    not pass as "ready to share"."""
    (tmp_path / "empty").mkdir()
    assert main(["verify", str(tmp_path / "empty")]) == 1
    assert "0 de-identified video(s) verified; 1 error(s)" in capsys.readouterr().out
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    rep = verify_folder(tmp_path / "empty")
    assert not rep.ok and [f.what.split(":")[0] for f in rep.errors] == ["no de-identified video here"]


def test_a_report_or_its_tables_renamed_are_still_recognised(released, tmp_path):
    """A report renamed evaluation.html, its summary renamed notes.json, the evaluation's
    run.json renamed: each names the inputs; they were 'not written by deid: check it'
    warnings and the folder 'ready to share'. They are recognised by their content."""
    from deid.report import build_report, summary_path
    from deid.report.build import ReportOptions
    from deid.report.testing import make_metrics_dir

    out, _ = released
    md = make_metrics_dir(tmp_path / "m", videos=("patient_a",), n_frames=8)
    html = build_report(md, tmp_path / "r" / "report.html", options=ReportOptions(strips=False))
    shutil.copy(html, out / "evaluation.html")
    shutil.copy(summary_path(html), out / "notes.json")
    shutil.copy(md / "run.json", out / "info.json")
    (out / "readme.html").write_text("<!DOCTYPE html><html><title>about this release</title></html>")
    rep = verify_folder(out)
    errors = {f.path: f.what for f in rep.errors}
    assert "the evaluation report:" in errors.get("evaluation.html", "")
    assert "the evaluation report's summary" in errors.get("notes.json", "")
    assert "run description" in errors.get("info.json", "")
    assert [f.path for f in rep.warnings] == ["readme.html"] and not rep.ok


def test_a_face_swap_model_in_the_folder_is_not_ready_to_share(released, tmp_path):
    """A patient's swap model folder (`deid swap train --out`, swap.keep_model) copied in
    with the outputs: the model re-creates the patient's face, the face set holds their
    aligned face crops (and the videos' paths), references.npy their embeddings. verify
    called them "not written by deid" warnings and the folder ready to share."""
    import numpy as np

    from deid.swap.faceset import FaceSet
    from deid.swap.testing import train_tiny_model

    out, _ = released
    model = train_tiny_model(tmp_path / "model", steps=1)
    (out / "p017" / "faces").mkdir(parents=True)
    for f in ("model.pt", "session.json"):
        shutil.copy(model / f, out / "p017" / f)
    np.save(out / "p017" / "references.npy", np.zeros((3, 128), np.float32))
    fs = FaceSet(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 68, 2), np.float32), np.zeros((2, 2, 3), np.float32),
                 np.arange(2), np.zeros(2, int), ("/ward3/Doe_John.mp4",))
    fs.save(out / "p017" / "faces" / "patient.npz")
    shutil.copy(out / "p017" / "model.pt", out / "backup.bin")  # renamed, on its own
    rep = verify_folder(out)
    assert not rep.ok
    errors = {f.path: f.what for f in rep.errors}
    assert "face-swap model" in errors["p017/model.pt"] and "face-swap model" in errors["backup.bin"]
    assert "face crops" in errors["p017/faces/patient.npz"]
    assert "face-swap model's folder" in errors["p017/references.npy"] and "face-swap model's folder" in errors["p017/session.json"]
    assert not [f for f in rep.warnings if f.path.startswith("p017") or f.path == "backup.bin"]


def test_a_swap_model_at_the_top_of_the_folder_does_not_take_over_other_findings(released, tmp_path):
    """A model copied into the shared folder itself made every other file there 'part of a
    face-swap model's folder': a renamed report or a note got the wrong reason. Only what a
    model's folder holds is; the rest keeps its own finding."""
    import numpy as np

    from deid.swap.testing import train_tiny_model

    out, _ = released
    model = train_tiny_model(tmp_path / "model", steps=1)
    for f in ("model.pt", "session.json"):
        shutil.copy(model / f, out / f)
    np.save(out / "references.npy", np.zeros((3, 128), np.float32))
    (out / "notes.txt").write_text("hello")
    (out / "summary.json").write_text('{\n "schema": "deid.report.summary/1"\n}')
    rep = verify_folder(out)
    errors = {f.path: f.what for f in rep.errors}
    assert "face-swap model" in errors["model.pt"] and "face-swap model's folder" in errors["references.npy"]
    assert "face-swap model's folder" in errors["session.json"]
    assert "report's summary" in errors["summary.json"] and [f.path for f in rep.warnings] == ["notes.txt"]
