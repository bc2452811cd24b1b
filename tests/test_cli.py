"""The `deid` console script end to end on synthetic clips (fake detector/pose/identity
backends selected through --set, real everything else)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deid import __version__
from deid.cli import main
from deid.io import has_sensitive_tags, probe
from deid.testing import make_synthetic_video

FAKES = ["--set", "detect.backend=color", "--set", "track.pose_backend=color_pose", "--set", "audit.identity_backend=patch",
         "--set", "audit.sample_frames=6", "--no-progress"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_in")
    make_synthetic_video(d / "good.mp4", n_frames=24, with_audio=True, metadata={"creation_time": "2020-02-02T00:00:00Z"})
    (d / "bad.mp4").write_text("not a video")
    return d


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out


def test_anonymize_batch_goes_on_after_a_bad_file(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["anonymize", str(inputs / "good.mp4"), str(inputs / "bad.mp4"), str(inputs / "missing.mp4"),
               "--out", str(out), "-m", "blur,mask", *FAKES])
    captured = capsys.readouterr()
    assert rc == 1
    assert "bad.mp4: not a video file" in captured.err and "missing.mp4: no such file" in captured.err
    assert "1 of 3 video(s) succeeded" in captured.out
    for m in ("blur", "mask"):
        v = out / f"good.{m}.mp4"
        assert v.exists() and probe(v).frame_count == 24 and not probe(v).has_audio
        assert has_sensitive_tags(v) == []
        assert (out / f"good.{m}.audit.json").exists() and (out / f"good.{m}.frames.parquet").exists()
    assert not list(out.glob("bad*")) and not list(out.glob(".*partial*"))


def test_each_error_is_one_line(inputs, tmp_path, capsys):
    rc = main(["anonymize", str(inputs / "bad.mp4"), "--out", str(tmp_path), "-m", "blur", *FAKES])
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("deid: error")]
    assert rc == 1 and len(err) == 1 and "bad.mp4" in err[0]


def test_error_lines_name_their_video():
    from deid.commands.anonymize import _naming_input

    assert _naming_input("/a/b.mp4", "/a/b.mp4: not a video file") == "/a/b.mp4: not a video file"
    assert _naming_input("/a/b.mp4", "the patient face set has 0 usable face(s)") == "/a/b.mp4: the patient face set has 0 usable face(s)"
    assert _naming_input("/a/b.mp4", None) == "/a/b.mp4: failed"


def test_dry_run_and_overwrite(inputs, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["anonymize", str(inputs / "good.mp4"), "--out", str(out), "-m", "pixelate", "--dry-run", *FAKES]) == 0
    assert not out.exists()
    text = capsys.readouterr().out
    assert "dry run: 1 video(s) would be de-identified" in text and "nothing was written" in text and "succeeded" not in text
    assert main(["anonymize", str(inputs / "good.mp4"), "--out", str(out), "-m", "pixelate", *FAKES]) == 0
    assert main(["anonymize", str(inputs / "good.mp4"), "--out", str(out), "-m", "pixelate", *FAKES]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["anonymize", str(inputs / "good.mp4"), "--out", str(out), "-m", "pixelate", "--overwrite", *FAKES]) == 0


def test_skip_existing_leaves_out_only_identical_work(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    make_synthetic_video(src / "a.mp4", n_frames=12)
    make_synthetic_video(src / "b.mp4", n_frames=13)
    out = tmp_path / "out"
    assert main(["anonymize", str(src), "--out", str(out), "-m", "mask", *FAKES]) == 0
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mask.mp4")}
    capsys.readouterr()
    make_synthetic_video(src / "c.mp4", n_frames=11)  # a video added to the folder
    assert main(["anonymize", str(src), "--out", str(out), "-m", "mask", "--skip-existing", *FAKES]) == 0
    text = capsys.readouterr().out
    assert text.count("skipped") == 3 and "3 of 3 video(s) succeeded (2 skipped: already done)" in text
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mask.mp4") if p.name in first} == first
    assert (out / "c.mask.mp4").is_file()
    # other input bytes under the same name, or another configuration: not the same work
    make_synthetic_video(src / "a.mp4", n_frames=14)
    assert main(["anonymize", str(src / "a.mp4"), "--out", str(out), "-m", "mask", "--skip-existing", *FAKES]) == 1
    assert "output exists" in capsys.readouterr().err
    assert main(["anonymize", str(src / "b.mp4"), "--out", str(out), "-m", "mask", "--skip-existing", *FAKES,
                 "--set", "anonymize.mask.shape=box"]) == 1
    capsys.readouterr()
    assert main(["anonymize", str(src), "--out", str(out), "-m", "mask", "--skip-existing", "--overwrite", *FAKES]) == 0
    text = capsys.readouterr().out
    assert "(2 skipped: already done)" in text and probe(out / "a.mask.mp4").frame_count == 14


def test_skip_existing_renders_only_a_method_added_since(tmp_path, capsys, monkeypatch):
    import deid.evaluate

    evaluated = []
    monkeypatch.setattr(deid.evaluate, "evaluate_outputs", lambda original, processed, *a, **k: evaluated.append(dict(processed)))
    make_synthetic_video(tmp_path / "v.mp4", n_frames=12)
    out = tmp_path / "out"
    assert main(["anonymize", str(tmp_path / "v.mp4"), "--out", str(out), "-m", "blur", *FAKES]) == 0
    blur = (out / "v.blur.mp4").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["anonymize", str(tmp_path / "v.mp4"), "--out", str(out), "-m", "blur,mask", "--skip-existing", "--evaluate", *FAKES]) == 0
    text = capsys.readouterr().out
    assert (out / "v.mask.mp4").is_file() and (out / "v.blur.mp4").stat().st_mtime_ns == blur
    assert re.search(r"v\.mp4\s+blur\s+skipped", text) and re.search(r"v\.mp4\s+mask\s+done", text)
    assert json.loads((out / "v.mask.audit.json").read_text())["method"] == "mask"
    # the evaluation sees both outputs (one left out would lose its rows in the tables)
    assert evaluated == [{"blur": str(out / "v.blur.mp4"), "mask": str(out / "v.mask.mp4")}]
    # an output that no longer matches its audit record (a run killed between writing a new
    # record and renaming its video) is not "done"
    with open(out / "v.blur.mp4", "ab") as fh:
        fh.write(b"\0")
    assert main(["anonymize", str(tmp_path / "v.mp4"), "--out", str(out), "-m", "blur,mask", "--skip-existing", *FAKES]) == 1
    assert "output exists" in capsys.readouterr().err


@pytest.mark.parametrize("names", ["input", "pseudonym"])
def test_skip_existing_with_swap_s_donor_or_another_method_s_settings_keeps_the_done_method(tmp_path, capsys, names):
    """README: a rerun 'with a method added: only the new method is rendered'. Adding
    `-m swap --donor X` sets swap.donor, and the new method may come with its own
    settings: neither shapes the blur output, so blur stays done (it used to count as
    another configuration: 'output exists', nothing rendered)."""
    make_synthetic_video(tmp_path / "v.mp4", n_frames=12)
    out = tmp_path / "out"
    naming = ["--set", f"io.output_names={names}"]
    assert main(["anonymize", str(tmp_path / "v.mp4"), "--out", str(out), "-m", "blur", *naming, *FAKES]) == 0
    (blur,) = out.glob("*.blur.mp4")
    before = blur.stat().st_mtime_ns
    capsys.readouterr()
    rc = main(["anonymize", str(tmp_path / "v.mp4"), "--out", str(out), "-m", "blur,mask", "--skip-existing", *naming, *FAKES,
               "--set", "swap.donor=demo-carphone", "--set", "anonymize.mask.shape=box", "--set", "evaluate.identity_every=2"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert re.search(r"blur\s+skipped", captured.out) and re.search(r"mask\s+done", captured.out)
    assert blur.stat().st_mtime_ns == before and len(list(out.glob("*.mask.mp4"))) == 1
    # a setting that does shape the blur output is still another configuration
    rc = main(["anonymize", str(tmp_path / "v.mp4"), "--out", str(out), "-m", "blur", "--skip-existing", *naming, *FAKES,
               "--set", "anonymize.blur.strength=0.3"])
    assert rc == 1 and "output exists" in capsys.readouterr().err


@pytest.mark.parametrize("names", ["input", "pseudonym"])
def test_skip_existing_tells_a_swap_made_with_another_donor_from_a_done_one(tmp_path, names):
    """Every audit record carries the hash of the settings that shaped its output, the
    donor included; a pseudonymous record's stored configuration has its paths left out,
    so without that hash a swap made with donor /a/x.mp4 looked done for donor /b/y.mp4."""
    from deid.archive import same_method_config
    from deid.config import load_config
    from deid.pipeline import read_record

    make_synthetic_video(tmp_path / "v.mp4", n_frames=12)
    out = tmp_path / "out"
    naming = ["--set", f"io.output_names={names}"]
    assert main(["anonymize", str(tmp_path / "v.mp4"), "--out", str(out), "-m", "blur", *naming, *FAKES]) == 0
    (blur,) = out.glob("*.blur.mp4")
    rec = read_record(blur)
    assert rec["method_config_hash"], rec.keys()
    over = [f"io.output_names={names}"] + [v for k, v in zip(FAKES, FAKES[1:]) if k == "--set"]
    cfg = load_config(None, over)
    assert same_method_config(rec, cfg, "blur")
    assert not same_method_config(rec, load_config(None, over + ["anonymize.blur.strength=0.3"]), "blur")
    # a swap record: the donor shapes it, paths left out of the stored config or not
    swap_rec = dict(rec, method="swap")
    from deid.archive import method_config_hash

    swap_rec["method_config_hash"] = method_config_hash(load_config(None, over + ["swap.donor=/a/x.mp4"]), "swap")
    swap_rec["config"] = json.loads(json.dumps(rec["config"]))
    assert same_method_config(swap_rec, load_config(None, over + ["swap.donor=/a/x.mp4"]), "swap")
    assert not same_method_config(swap_rec, load_config(None, over + ["swap.donor=/b/y.mp4"]), "swap")


def test_a_video_added_beside_one_of_the_same_name_keeps_the_first_s_outputs(tmp_path, capsys):
    """visit.mov was de-identified as visit.blur.mp4; visit.mp4 is added to the folder:
    the two now share a name, the new one gets the path-hash suffix and visit.mov keeps
    its outputs (a rerun skips it rather than writing it again under a second name)."""
    src = tmp_path / "in"
    src.mkdir()
    make_synthetic_video(src / "visit.mov", n_frames=12)
    out = tmp_path / "out"
    assert main(["anonymize", str(src), "--out", str(out), "-m", "mask", *FAKES]) == 0
    make_synthetic_video(src / "visit.mp4", n_frames=14)
    capsys.readouterr()
    assert main(["anonymize", str(src), "--out", str(out), "-m", "mask", "--skip-existing", *FAKES]) == 0
    assert "(1 skipped: already done)" in capsys.readouterr().out
    names = sorted(p.name for p in out.glob("*.mask.mp4"))
    assert len(names) == 2 and "visit.mask.mp4" in names
    (other,) = [n for n in names if n != "visit.mask.mp4"]
    assert re.fullmatch(r"visit-[0-9a-f]{8}\.mask\.mp4", other) and probe(out / other).frame_count == 14
    assert probe(out / "visit.mask.mp4").frame_count == 12
    # with a method added: blur, like mask, goes under the name the video's outputs have
    assert main(["anonymize", str(src), "--out", str(out), "-m", "mask,blur", "--skip-existing", *FAKES]) == 0
    assert probe(out / "visit.blur.mp4").frame_count == 12 and probe(out / other.replace(".mask.", ".blur.")).frame_count == 14


def test_inputs_inside_the_output_folder_are_named_in_the_error(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    make_synthetic_video(src / "a.mp4", n_frames=6)
    assert main(["anonymize", str(src), "--out", str(src), "-m", "mask", *FAKES]) == 1
    err = capsys.readouterr().err
    assert "no video files found" in err and "1 video file(s) there are inside the output folder" in err


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_stopped_run_leaves_nothing_behind(tmp_path, sig):
    """A scheduler stops jobs with SIGTERM (Slurm, Kubernetes), a person with Ctrl-C:
    either way the run stops, its temporaries are removed and nothing is published."""
    import os
    import signal
    import time

    clip = make_synthetic_video(tmp_path / "long.mp4", n_frames=400)
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "deid.cli", "anonymize", str(clip.path), "--out", str(out), "-m", "blur,mask", *FAKES],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and not (out.is_dir() and any(n.startswith(".") for n in os.listdir(out))):
        time.sleep(0.01)  # until its hidden temporaries exist: mid-render
    assert p.poll() is None, "the run finished before it could be stopped"
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=120)
    assert p.returncode == (143 if sig == "SIGTERM" else 130), err[-2000:]
    assert not out.exists()  # the folder it created, empty, went too


def test_json_summary(inputs, tmp_path, capsys):
    rc = main(["anonymize", str(inputs / "good.mp4"), "--out", str(tmp_path), "-m", "mask", "--json", *FAKES])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data[0]["status"] == "done" and data[0]["outputs"][0]["method"] == "mask"


def test_unknown_method_and_bad_config(inputs, tmp_path, capsys):
    assert main(["anonymize", str(inputs / "good.mp4"), "--out", str(tmp_path), "-m", "smudge"]) == 1
    assert "unknown method" in capsys.readouterr().err
    assert main(["anonymize", str(inputs / "good.mp4"), "--out", str(tmp_path), "-m", "blur", "--set", "track.nope=1"]) == 1
    assert "unknown config key" in capsys.readouterr().err


def test_outputs_never_replace_another_input_nor_feed_back_into_a_scan(inputs, tmp_path, capsys):
    import shutil

    from deid.pipeline import sha256_file

    # an input named like another input's output, both in one call, --overwrite given
    d = tmp_path / "d"
    d.mkdir()
    shutil.copy(inputs / "good.mp4", d / "a.mp4")
    shutil.copy(inputs / "good.mp4", d / "a.blur.mp4")
    before = sha256_file(d / "a.blur.mp4")
    rc = main(["anonymize", str(d / "a.mp4"), str(d / "a.blur.mp4"), "--out", str(d), "-m", "blur", "--overwrite", *FAKES])
    assert rc == 1 and "another input of this batch" in capsys.readouterr().err
    assert sha256_file(d / "a.blur.mp4") == before
    # an output folder inside the scanned folder: a second run does not take the outputs as inputs
    nest = tmp_path / "nest"
    nest.mkdir()
    shutil.copy(inputs / "good.mp4", nest / "v.mp4")
    for _ in range(2):
        main(["anonymize", str(nest), "--out", str(nest / "deid"), "-m", "mask", "--overwrite", *FAKES])
    assert sorted(p.name for p in (nest / "deid").rglob("*.mp4")) == ["v.mask.mp4"]
    # --out naming a file, and an empty method list: one-line errors, nothing run
    assert main(["anonymize", str(nest / "v.mp4"), "--out", str(nest / "v.mp4"), "-m", "blur", *FAKES]) == 1
    assert "is a file" in capsys.readouterr().err
    assert main(["anonymize", str(nest / "v.mp4"), "--out", str(tmp_path / "e"), "-m", ",", *FAKES]) == 1
    assert "no method given" in capsys.readouterr().err and not (tmp_path / "e").exists()
    # an --out that cannot be created (under a file; read-only or full storage alike): one line
    assert main(["anonymize", str(nest / "v.mp4"), "--out", str(nest / "v.mp4" / "sub"), "-m", "blur", *FAKES]) == 1
    assert capsys.readouterr().err == f"deid: error: cannot create --out {nest / 'v.mp4' / 'sub'}: {nest / 'v.mp4'} is a file, not a folder\n"


def test_file_system_errors_are_one_line_not_a_traceback(capsys, monkeypatch):
    import deid.commands.probe as probe_cmd

    def denied(args):
        raise PermissionError(13, "Permission denied", "/archive/locked.mp4")

    monkeypatch.setattr(probe_cmd, "run", denied)
    assert main(["probe", "x.mp4"]) == 1
    assert capsys.readouterr().err == "deid: error: Permission denied: /archive/locked.mp4\n"


def test_probe_command(inputs, capsys):
    assert main(["probe", str(inputs / "good.mp4")]) == 0
    assert "160x120" in capsys.readouterr().out
    assert main(["probe", "--json", str(inputs / "good.mp4"), str(inputs / "bad.mp4")]) == 1
    line = capsys.readouterr().out.splitlines()[0]
    assert json.loads(line)["frame_count"] == 24
    # a folder: every video in it, as deid anonymize finds them
    assert main(["probe", "--json", str(inputs)]) == 1  # bad.mp4 is in it
    out = capsys.readouterr()
    rows = {Path(json.loads(x)["path"]).name: json.loads(x) for x in out.out.splitlines()}
    assert sorted(rows) == ["bad.mp4", "good.mp4"] and "bad.mp4" in out.err
    assert "error" in rows["bad.mp4"] and "error" not in rows["good.mp4"]  # a failed file is listed, with its error


def test_library_never_imports_ray():
    code = (
        "import importlib, pkgutil, sys, deid\n"
        "for m in pkgutil.walk_packages(deid.__path__, 'deid.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert 'ray' not in sys.modules, [k for k in sys.modules if k.startswith('ray')]\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_library_never_imports_ray_and_archive_hands_over_to_ray_jobs(tmp_path):
    """deid/ has no import of ray or ray_jobs anywhere; ``deid archive`` runs
    ``python -m ray_jobs.deidentify`` in its own process (its exit code comes back: 2 for
    a missing manifest) and leaves ray out of the calling process."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    import deid

    pat = re.compile(r"^\s*(import ray\b|from ray\b|import ray_jobs\b|from ray_jobs\b)", re.M)
    offenders = [str(f) for f in Path(deid.__file__).parent.rglob("*.py") if pat.search(f.read_text())]
    assert offenders == []
    code = ("import sys; from deid.cli import main; "
            f"rc = main(['archive', '--manifest', {str(tmp_path / 'missing')!r}, '--out', {str(tmp_path / 'out')!r}, '--local']); "
            "print(rc, 'ray' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.split() == ["2", "False"], (r.stdout, r.stderr[-2000:])
    assert "manifest" in r.stderr and not (tmp_path / "out").exists()


def test_summary_names_the_error_not_a_path_for_a_video_that_failed_after_rendering():
    from deid.batch import summary_table
    from deid.pipeline import MethodOutput, VideoResult

    ok = VideoResult(input="/in/a.mp4", status="done", frames_read=5)
    ok.outputs = [MethodOutput("blur", "/out/a.blur.mp4", frames_written=5)]
    bad = VideoResult(input="/in/b.mp4", status="failed", error="/in/b.mp4: cannot publish /out/b.blur.mp4 (disk full)", frames_read=5)
    bad.outputs = [MethodOutput("blur", "/out/b.blur.mp4", frames_written=5)]
    rows = summary_table([ok, bad]).splitlines()
    a = next(r for r in rows if r.startswith("a.mp4"))
    b = next(r for r in rows if r.startswith("b.mp4"))
    assert a.endswith("/out/a.blur.mp4")
    assert "failed" in b and b.endswith("(disk full)")
    assert rows[-1] == "1 of 2 video(s) succeeded; 1 failed"


def test_pseudonymous_output_names_leave_out_the_inputs_names(tmp_path, capsys):
    """io.output_names=pseudonym: outputs named after the input's sha256 (16 hex), all in
    --out (the folders' names are not mirrored), the audit records and frames tables
    carry no trace of the input's path, a second copy of the same bytes is not done
    twice, and --skip-existing finds the outputs again."""
    import hashlib
    import shutil

    src = tmp_path / "Doe_John" / "2021-03-04 Doe John walking.mp4"
    src.parent.mkdir()
    make_synthetic_video(src, n_frames=12)
    shutil.copy(src, tmp_path / "copy_of_it.mp4")
    out = tmp_path / "out"
    args = ["anonymize", str(tmp_path / "Doe_John"), str(tmp_path / "copy_of_it.mp4"), "--out", str(out), "-m", "blur,mask",
            "--set", "io.output_names=pseudonym", *FAKES]
    assert main(args) == 0
    text, err = capsys.readouterr()
    assert f"before sharing {out}: deid verify {out}" in err
    name = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.{m}.{x}" for m in ("blur", "mask")
                                                            for x in ("mp4", "audit.json", "frames.parquet"))
    for p in out.iterdir():
        data = p.read_bytes()
        assert b"Doe" not in data and b"John" not in data and b"walking" not in data, p.name
    rec = json.loads((out / f"{name}.blur.audit.json").read_text())
    assert rec["input"]["path"] is None and rec["input"]["sha256"].startswith(name) and "path" not in rec["input"]["video"]
    assert "(1 skipped: the same bytes as another input)" in text
    assert main([*args, "--skip-existing"]) == 0
    assert "(1 skipped: already done; 1 skipped: the same bytes as another input)" in capsys.readouterr().out


def test_pseudonymous_evaluation_tables_stay_out_of_the_output_folder(tmp_path, capsys, monkeypatch):
    """--evaluate's tables name the original (its path beside each output): under
    io.output_names=pseudonym they go to <out>.records beside --out (made private), or to
    --records; one inside --out is refused before any video is touched. Without
    pseudonyms they stay in <out>/metrics."""
    import stat

    import deid.evaluate

    def fake_evaluate(original, processed, out_dir, cfg, video_id=None):  # writes what the real one writes: the path
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"{video_id}.json").write_text(json.dumps({"original": str(original), "processed": processed}))

    monkeypatch.setattr(deid.evaluate, "evaluate_outputs", fake_evaluate)
    src = tmp_path / "Doe_John" / "walking.mp4"
    src.parent.mkdir()
    make_synthetic_video(src, n_frames=8)
    out = tmp_path / "out"
    base = ["anonymize", str(src), "--out", str(out), "-m", "mask", "--evaluate", *FAKES]
    assert main([*base, "--set", "io.output_names=pseudonym", "--records", str(out / "keys")]) == 1
    assert "lies inside the output folder" in capsys.readouterr().err and not out.exists()

    assert main([*base, "--set", "io.output_names=pseudonym"]) == 0
    records = tmp_path / "out.records"
    assert f"evaluation tables: {records / 'metrics'}" in capsys.readouterr().err
    assert len(list((records / "metrics").iterdir())) == 1 and "Doe_John" in next((records / "metrics").iterdir()).read_text()
    assert stat.S_IMODE(records.stat().st_mode) == 0o700
    assert all(p.is_file() and b"Doe" not in p.read_bytes() and b"walking" not in p.read_bytes() for p in out.rglob("*"))

    assert main([*base, "--set", "io.output_names=pseudonym", "--records", str(tmp_path / "elsewhere"), "--overwrite"]) == 0
    assert len(list((tmp_path / "elsewhere" / "metrics").iterdir())) == 1

    assert f"--out {tmp_path / 'elsewhere' / 'report.html'})" in capsys.readouterr().err
    plain = tmp_path / "plain"
    assert main(["anonymize", str(src), "--out", str(plain), "-m", "mask", "--evaluate", *FAKES]) == 0
    assert (plain / "metrics" / "walking.json").is_file() and not (tmp_path / "plain.records").exists()
    assert "--out report.html)" in capsys.readouterr().err  # the report names the inputs: not suggested inside --out


def test_a_closed_pipe_is_not_an_error(tmp_path):
    """`deid probe *.mp4 | head -1`: the reader leaves early; no error, no traceback."""
    import shutil

    clip = make_synthetic_video(tmp_path / "c.mp4", n_frames=4).path
    copies = [shutil.copy(clip, tmp_path / f"c{k:03d}.mp4") for k in range(200)]  # one path given twice is probed once
    p = subprocess.Popen([sys.executable, "-m", "deid.cli", "probe", *map(str, copies)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and err == "", err


@pytest.mark.parametrize("cmd", ["anonymize", "archive", "verify", "overlays", "evaluate", "report", "swap", "donor", "demo"])
def test_help_shows_no_rest_markup(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert f"deid {cmd}" in text and "``" not in text


def test_a_folder_scan_leaves_out_earlier_outputs_kept_under_it(tmp_path, capsys, caplog):
    """Outputs of an earlier run moved under the input folder (their audit records beside
    them) are not taken for new inputs; given by name, such a file is processed."""
    src = tmp_path / "in"
    src.mkdir()
    make_synthetic_video(src / "a.mp4", n_frames=8)
    assert main(["anonymize", str(src), "--out", str(src / "deid"), "-m", "mask", *FAKES]) == 0  # --out inside the input folder
    capsys.readouterr()
    with caplog.at_level("WARNING"):
        assert main(["anonymize", str(src), "--out", str(tmp_path / "out2"), "-m", "mask", *FAKES]) == 0
    assert sorted(p.name for p in (tmp_path / "out2").rglob("*.mp4")) == ["a.mask.mp4"]
    assert any("left out 1 video(s) with a deid audit record beside them" in r.getMessage() for r in caplog.records)
    assert main(["anonymize", str(src / "deid" / "a.mask.mp4"), "--out", str(tmp_path / "out3"), "-m", "mask", *FAKES]) == 0
    assert (tmp_path / "out3" / "a.mask.mask.mp4").is_file()
