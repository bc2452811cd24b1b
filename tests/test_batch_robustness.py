"""`deid anonymize` on a messy archive: links that loop or lead to folders, audit records
of the wrong shape, a dry run with --skip-existing, an evaluation that fails for one
video, odd frame sizes under --evaluate, a line as each video finishes."""

import json
import logging
import os

import pytest

from deid.cli import main
from deid.errors import ConfigError
from deid.testing import make_synthetic_video

from test_cli import FAKES


@pytest.fixture()
def two(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    make_synthetic_video(src / "a.mp4", n_frames=8)
    make_synthetic_video(src / "b.mp4", n_frames=9)
    return src


def test_a_link_loop_fails_on_its_own_and_the_batch_goes_on(two, tmp_path, capsys):
    loop = tmp_path / "loop.mp4"
    os.symlink(loop, loop)
    rc = main(["anonymize", str(two / "a.mp4"), str(loop), "--out", str(tmp_path / "out"), "-m", "mask", *FAKES])
    err = capsys.readouterr().err
    assert rc == 1 and (tmp_path / "out" / "a.mask.mp4").is_file()
    assert "Traceback" not in err and any("loop.mp4" in ln for ln in err.splitlines() if ln.startswith("deid: error:"))


def test_links_to_folders_in_a_scan_are_warned_about(two, tmp_path, caplog, capsys):
    other = tmp_path / "ward3"
    other.mkdir()
    make_synthetic_video(other / "c.mp4", n_frames=8)
    os.symlink(other, two / "ward3")
    os.symlink(tmp_path / "nowhere.mp4", two / "dangling.mp4")
    with caplog.at_level(logging.WARNING):
        assert main(["anonymize", str(two), "--out", str(tmp_path / "out"), "-m", "mask", "--dry-run", *FAKES]) == 0
    text = caplog.text
    assert "a link to a folder, not followed" in text and str(other) in text
    assert "a link that leads to no file" in text


def test_skip_existing_takes_a_record_of_the_wrong_shape_for_not_done(two, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["anonymize", str(two), "--out", str(out), "-m", "mask", *FAKES]) == 0
    (out / "a.mask.audit.json").write_text("[]")
    rec = json.loads((out / "b.mask.audit.json").read_text())
    rec["input"] = "x"
    (out / "b.mask.audit.json").write_text(json.dumps(rec))
    capsys.readouterr()
    rc = main(["anonymize", str(two), "--out", str(out), "-m", "mask", "--skip-existing", "--overwrite", *FAKES])
    captured = capsys.readouterr()
    assert rc == 0 and "Traceback" not in captured.err and "skipped" not in captured.out  # both rendered again


def test_a_dry_run_with_skip_existing_says_what_would_be_skipped(two, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["anonymize", str(two), "--out", str(out), "-m", "mask", *FAKES]) == 0
    capsys.readouterr()
    assert main(["anonymize", str(two), "--out", str(out), "-m", "mask", "--skip-existing", "--dry-run", *FAKES]) == 0
    text = capsys.readouterr().out
    assert "2 skipped: already done" in text and "failed" not in text


def test_an_evaluation_that_fails_is_that_videos_and_the_batch_goes_on(two, tmp_path, capsys, monkeypatch):
    import deid.evaluate
    from deid.errors import InvalidInputError

    seen = []

    def fake_evaluate(original, processed, out_dir, cfg, video_id=None):
        seen.append(video_id)
        if video_id == "a":
            raise InvalidInputError("a.mask.mp4 is 10x10 but the original is 9x9")
        return {"errors": {}}

    monkeypatch.setattr(deid.evaluate, "evaluate_outputs", fake_evaluate)
    rc = main(["anonymize", str(two), "--out", str(tmp_path / "out"), "-m", "mask", "--evaluate", *FAKES])
    err = capsys.readouterr().err
    assert seen == ["a", "b"] and rc == 1  # b was evaluated after a's failure; the exit code says it
    assert "evaluation: a.mask.mp4 is 10x10" in err and "Traceback" not in err
    # a line as each video finishes, in order
    lines = [ln for ln in err.splitlines() if ln.startswith("[")]
    assert lines[0].startswith("[1/2] a.mp4: done: mask") and "evaluation: a.mask.mp4" in lines[0]
    assert lines[1].startswith("[2/2] b.mp4: done: mask")


def test_records_given_as_a_file_is_refused_before_any_work(two, tmp_path, capsys):
    from deid.records import records_folder

    f = tmp_path / "recfile"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        records_folder(tmp_path / "out", "input", f)
    assert main(["anonymize", str(two), "--out", str(tmp_path / "out"), "-m", "mask", "--evaluate", "--records", str(f),
                 *FAKES]) == 1
    assert "is a file" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_an_odd_sized_videos_padded_output_is_comparable_with_it(tmp_path):
    """deid pads an odd width or height by one pixel (yuv420p); the evaluation compared
    sizes strictly and refused every such output."""
    from deid.evaluate.api import comparable_outputs

    import av
    import numpy as np

    orig = tmp_path / "o.mkv"  # libx264 in yuv420p cannot hold an odd size; FFV1 in yuv444p can
    with av.open(str(orig), "w") as c:
        st = c.add_stream("ffv1", rate=25)
        st.width, st.height, st.pix_fmt = 161, 121, "yuv444p"
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((121, 161, 3), 40 * i, np.uint8), format="rgb24")
            for pkt in st.encode(frame):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    padded = make_synthetic_video(tmp_path / "p.mp4", n_frames=6, width=162, height=122).path
    other = make_synthetic_video(tmp_path / "q.mp4", n_frames=6, width=164, height=122).path
    _, infos, _, refused = comparable_outputs(str(orig), {"mask": str(padded), "blur": str(other)}, 0)
    assert set(infos) == {"mask"} and "164x122" in refused["blur"]


def test_a_refused_video_is_in_the_evaluation_tables_so_the_report_counts_it(two, tmp_path, capsys, monkeypatch):
    """`deid anonymize DIR --evaluate` with one video refused (the leak audit, an unreadable
    file): only evaluated videos reached the metrics folder, so `deid report` described the
    others as the whole run and could say OK. The failure is in the status table now, the
    report counts it, and a rerun where the video succeeds clears it."""
    import pandas as pd

    import deid.evaluate
    from deid.report import build_report, summary_path
    from deid.report.build import ReportOptions

    monkeypatch.setattr(deid.evaluate, "evaluate_outputs", lambda *a, **k: {"errors": {}})
    (two / "c.mp4").write_bytes(b"\x00" * 4096)  # not a video
    out = tmp_path / "out"
    assert main(["anonymize", str(two), "--out", str(out), "-m", "mask", "--evaluate", *FAKES]) == 1
    capsys.readouterr()
    st = pd.read_parquet(out / "metrics" / "status.parquet")
    failed = st[st["video"] == "c"]
    assert list(failed["state"]) == ["failed"] and list(failed["method"]) == [""] and failed["error"].iloc[0]
    html = build_report(out / "metrics", tmp_path / "r.html", options=ReportOptions(strips=False))
    v = json.loads(summary_path(html).read_text())["verdict"]
    assert v["level"] != "ok" and v["errors"] == 1 and "1 video(s) produced no output" in v["text"]
    make_synthetic_video(two / "c.mp4", n_frames=8)  # fixed: the rerun clears the failure
    assert main(["anonymize", str(two), "--out", str(out), "-m", "mask", "--evaluate", "--overwrite", *FAKES]) == 0
    st = pd.read_parquet(out / "metrics" / "status.parquet") if (out / "metrics" / "status.parquet").is_file() else None
    assert st is None or not (st["state"] == "failed").any()


def test_a_refused_video_under_pseudonyms_is_recorded_without_its_name(two, tmp_path, capsys, monkeypatch):
    import pandas as pd

    import deid.evaluate

    monkeypatch.setattr(deid.evaluate, "evaluate_outputs", lambda *a, **k: {"errors": {}})
    (two / "c.mp4").write_bytes(b"\x00" * 4096)
    out = tmp_path / "share"
    assert main(["anonymize", str(two), "--out", str(out), "-m", "mask", "--evaluate",
                 "--set", "io.output_names=pseudonym", *FAKES]) == 1
    st = pd.read_parquet(tmp_path / "share.records" / "metrics" / "status.parquet")
    row = st[st["state"] == "failed"].iloc[0]
    assert row["video"] != "c" and "c.mp4" not in row["error"] and "<input>" in row["error"]
    assert pd.isna(row["input_path"])


def test_a_video_whose_id_is_too_long_for_a_file_name_is_still_evaluated(tmp_path, capsys):
    """The tables' partition folders are named after the video's id, percent-encoded: a
    90-byte non-ASCII name (each byte three in the folder name) or a deep folder path
    went past the 255-byte file-name limit and the evaluation failed ('File name too
    long'). Such an id is cut, with a hash of the whole, and stays unique."""
    import urllib.parse

    import pandas as pd

    from deid.evaluate.store import table_video_id

    src = tmp_path / "in" / ("病棟" * 10)
    src.mkdir(parents=True)
    make_synthetic_video(src / (("患者" * 15) + ".mp4"), n_frames=8)
    make_synthetic_video(src / (("患者" * 15) + "x.mp4"), n_frames=8)
    out = tmp_path / "out"
    rc = main(["anonymize", str(tmp_path / "in"), "--out", str(out), "-m", "mask", "--evaluate", *FAKES])
    err = capsys.readouterr().err
    assert rc == 0, err
    vids = set(pd.read_parquet(out / "metrics" / "summary.parquet")["video"])
    assert len(vids) == 2 and all("~" in v and v.startswith("病棟") for v in vids)
    assert all(len(urllib.parse.quote(v, safe="")) <= 180 for v in vids)
    assert table_video_id("a/clip") == "a/clip" and table_video_id(table_video_id("x" * 300)) == table_video_id("x" * 300)


def test_a_swap_that_cannot_train_fails_alone_and_the_other_methods_are_written(two, tmp_path, capsys, monkeypatch):
    import contextlib

    import pandas as pd

    import deid.batch
    from deid.errors import InvalidInputError

    @contextlib.contextmanager
    def no_faces(video, cfg, out_dir=None):
        raise InvalidInputError("the patient face set has 0 usable face(s)")
        yield

    monkeypatch.setattr(deid.batch, "_swap_session", no_faces)
    out = tmp_path / "out"
    rc = main(["anonymize", str(two / "a.mp4"), "--out", str(out), "-m", "swap,blur,mask", "--donor", "demo-carphone",
               "--evaluate", *FAKES])
    captured = capsys.readouterr()
    assert rc == 1, captured.err  # the swap failed: the run did not do all it was asked
    assert (out / "a.blur.mp4").is_file() and (out / "a.mask.mp4").is_file() and not (out / "a.swap.mp4").exists()
    assert (out / "a.blur.audit.json").is_file() and (out / "a.mask.audit.json").is_file()
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("deid: error:")]
    assert len(errors) == 1 and "swap: the patient face set has 0 usable face(s)" in errors[0] and "a.mp4" in errors[0]
    assert "swap failed: the patient face set has 0 usable face(s)" in captured.err  # the line as the video finishes
    rows = [ln.split() for ln in captured.out.splitlines() if ln.startswith("a.mp4")]
    assert {(r[1], r[2]) for r in rows} == {("blur", "done"), ("mask", "done"), ("swap", "failed")}
    assert "0 of 1 video(s) succeeded; 1 with a method failed (its other outputs written)" in captured.out
    # the evaluation has the two outputs, and the swap's failure in the status table the report reads
    summary = pd.read_parquet(out / "metrics" / "summary.parquet")
    assert set(summary["method"]) == {"original", "blur", "mask"}
    status = pd.read_parquet(out / "metrics" / "status.parquet")
    failed = status[status["state"] == "failed"]
    assert list(failed["method"]) == ["swap"] and "0 usable face" in failed["error"].iloc[0]
    # a swap that fails alone still fails the video: no other output, no "other methods" wording
    rc = main(["anonymize", str(two / "b.mp4"), "--out", str(out), "-m", "swap", "--donor", "demo-carphone", *FAKES])
    err = capsys.readouterr().err
    assert rc == 1 and "0 usable face" in err and not list(out.glob("b.*.mp4"))


def test_a_swap_added_with_skip_existing_that_cannot_train_keeps_the_earlier_outputs_evaluated(two, tmp_path, capsys,
                                                                                                monkeypatch):
    import contextlib

    import pandas as pd

    import deid.batch
    from deid.errors import InvalidInputError

    @contextlib.contextmanager
    def no_faces(video, cfg, out_dir=None):
        raise InvalidInputError("the patient face set has 0 usable face(s)")
        yield

    out = tmp_path / "out"
    assert main(["anonymize", str(two / "a.mp4"), "--out", str(out), "-m", "blur", "--evaluate", *FAKES]) == 0
    monkeypatch.setattr(deid.batch, "_swap_session", no_faces)
    capsys.readouterr()
    rc = main(["anonymize", str(two / "a.mp4"), "--out", str(out), "-m", "blur,swap", "--donor", "demo-carphone",
               "--skip-existing", "--evaluate", *FAKES])
    captured = capsys.readouterr()
    assert rc == 1 and "Traceback" not in captured.err
    rows = {tuple(ln.split()[1:3]) for ln in captured.out.splitlines() if ln.startswith("a.mp4")}
    assert rows == {("blur", "skipped"), ("swap", "failed")}
    status = pd.read_parquet(out / "metrics" / "status.parquet")
    assert list(status.loc[status["state"] == "failed", "method"]) == ["swap"]  # not a "no output" row for the video
    assert set(pd.read_parquet(out / "metrics" / "summary.parquet")["method"]) == {"original", "blur"}


def test_a_method_added_with_skip_existing_that_fails_is_that_methods_failure(two, tmp_path, capsys, monkeypatch):
    import pandas as pd

    import deid.pipeline
    from deid.errors import DeidError

    out = tmp_path / "out"
    assert main(["anonymize", str(two / "a.mp4"), "--out", str(out), "-m", "blur", "--evaluate", *FAKES]) == 0

    def broken(*a, **k):
        raise DeidError("the mask's model broke")

    monkeypatch.setattr(deid.pipeline, "_run", broken)
    capsys.readouterr()
    rc = main(["anonymize", str(two / "a.mp4"), "--out", str(out), "-m", "blur,mask", "--skip-existing", "--evaluate", *FAKES])
    captured = capsys.readouterr()
    assert rc == 1 and "Traceback" not in captured.err
    assert any("mask: the mask's model broke" in ln for ln in captured.err.splitlines() if ln.startswith("deid: error:"))
    rows = {tuple(ln.split()[1:3]) for ln in captured.out.splitlines() if ln.startswith("a.mp4")}
    assert rows == {("blur", "skipped"), ("mask", "failed")}
    status = pd.read_parquet(out / "metrics" / "status.parquet")
    assert list(status.loc[status["state"] == "failed", "method"]) == ["mask"]
    assert set(pd.read_parquet(out / "metrics" / "summary.parquet")["method"]) == {"original", "blur"}
    assert (out / "a.blur.mp4").is_file() and not (out / "a.mask.mp4").exists()


def test_an_out_folder_under_a_file_is_refused_by_the_dry_run_too(two, tmp_path, capsys):
    (tmp_path / "f.mp4").write_bytes(b"x")
    for extra in (["--dry-run"], []):
        rc = main(["anonymize", str(two / "a.mp4"), "--out", str(tmp_path / "f.mp4" / "sub"), "-m", "mask", *extra, *FAKES])
        err = capsys.readouterr().err
        assert rc == 1 and "f.mp4 is a file, not a folder" in err, (extra, err)


def test_a_batch_whose_every_video_failed_leaves_no_empty_out_folder(tmp_path, capsys):
    (tmp_path / "bad.mp4").write_text("not a video")
    out = tmp_path / "new" / "out"
    assert main(["anonymize", str(tmp_path / "bad.mp4"), "--out", str(out), "-m", "mask", *FAKES]) == 1
    assert not out.exists()
    out.mkdir(parents=True)  # a folder that was there before stays
    assert main(["anonymize", str(tmp_path / "bad.mp4"), "--out", str(out), "-m", "mask", *FAKES]) == 1
    assert out.is_dir()


def test_a_batch_whose_models_cannot_be_built_leaves_no_empty_out_folder(tmp_path, capsys, monkeypatch):
    # the --out folder is created before the models are built: a model that cannot be
    # loaded failed the run and left that empty folder behind (review of ddab518)
    import deid.batch
    from deid.errors import ModelWeightsError

    def no_model(*a, **k):
        raise ModelWeightsError("the face detector's weights are missing")

    (tmp_path / "bad.mp4").write_text("not a video")
    monkeypatch.setattr(deid.batch.Components, "build", no_model)
    out = tmp_path / "out"
    assert main(["anonymize", str(tmp_path / "bad.mp4"), "--out", str(out), "-m", "mask", *FAKES]) == 1
    assert "weights are missing" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()  # a folder that was there before stays
    assert main(["anonymize", str(tmp_path / "bad.mp4"), "--out", str(out), "-m", "mask", *FAKES]) == 1
    assert out.is_dir()


def test_a_dry_run_with_skip_existing_shows_why_a_method_added_since_would_fail(two, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["anonymize", str(two / "a.mp4"), "--out", str(out), "-m", "mask", *FAKES]) == 0
    (out / "a.blur.mp4").write_bytes(b"someone else's file")
    capsys.readouterr()
    rc = main(["anonymize", str(two / "a.mp4"), "--out", str(out), "-m", "mask,blur", "--skip-existing", "--dry-run", *FAKES])
    printed = capsys.readouterr().out
    rows = [ln for ln in printed.splitlines() if ln.startswith("a.mp4")]
    assert rc == 1 and any(" failed " in ln and "a.blur.mp4" in ln for ln in rows), printed  # the reason, in the table
    assert any(" mask " in ln and "skipped" in ln for ln in rows)


def test_an_evaluation_error_of_a_video_with_a_failed_method_is_in_the_error_lines(two, tmp_path, capsys, monkeypatch):
    import contextlib

    import deid.batch
    from deid.errors import InvalidInputError

    @contextlib.contextmanager
    def no_faces(video, cfg, out_dir=None):
        raise InvalidInputError("the patient face set has 0 usable face(s)")
        yield

    def broken_evaluation(r, outputs, cfg, metrics, video_id):
        r.evaluation_error = "the pose model broke"

    monkeypatch.setattr(deid.batch, "_swap_session", no_faces)
    monkeypatch.setattr(deid.batch, "_evaluate", broken_evaluation)
    rc = main(["anonymize", str(two / "a.mp4"), "--out", str(tmp_path / "out"), "-m", "swap,mask", "--donor", "demo-carphone",
               "--evaluate", *FAKES])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("deid: error:")]
    assert rc == 1 and any("swap: the patient face set" in ln for ln in errors)
    assert any("evaluation: the pose model broke" in ln for ln in errors), errors
