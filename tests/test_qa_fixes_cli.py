"""Small CLI findings of a QA pass: what a user is told for a file where a folder was
expected, a failed probe in --json, a donor video without a picture, a file name that
starts with '-'."""

import json

import av
import numpy as np
import pytest

from deid.cli import main
from deid.testing import make_synthetic_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_synthetic_video(tmp_path_factory.mktemp("qa_cli") / "clip.mp4", n_frames=6, width=64, height=48).path


def test_evaluate_out_that_is_a_file(clip, tmp_path, capsys):
    f = tmp_path / "metrics"
    f.write_text("x")
    assert main(["evaluate", "--original", str(clip), "--processed", f"blur={clip}", "--out", str(f), "--no-progress"]) == 1
    assert capsys.readouterr().err.strip() == f"deid: error: --out {f} is a file; give the folder the metrics tables go to (METRICS_DIR)"


def test_report_of_a_file_says_it_is_not_a_metrics_folder(tmp_path, capsys):
    f = tmp_path / "metrics"
    f.write_text("x")
    assert main(["report", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{f}: is a file, not a metrics directory" in err and "run `deid evaluate" not in err


def test_probe_json_lists_the_files_that_failed(clip, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    assert main(["probe", "--json", str(clip), str(bad)]) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["path"] == str(clip) and "error" not in rows[0]
    assert rows[1] == {"path": str(bad), "error": f"{bad}: not a video file (unrecognised container format)"}


def test_probe_of_a_name_starting_with_a_dash_hints_at_double_dash(capsys):
    with pytest.raises(SystemExit):
        main(["probe", "-leading-dash.mp4"])
    assert "deid probe -- -clip.mp4" in capsys.readouterr().err


def _audio_only(path):
    with av.open(str(path), "w") as c:
        a = c.add_stream("aac", rate=44100)
        for _ in range(4):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate = 44100
            for pk in a.encode(f):
                c.mux(pk)
        for pk in a.encode():
            c.mux(pk)
    return path


def test_donor_add_names_the_users_file_not_the_librarys_copy(tmp_path, capsys):
    v = _audio_only(tmp_path / "voice.mp4")
    rc = main(["donor", "add", "d3", "--video", str(v), "--consent-by", "X", "--expires", "2099-01-01",
               "--library", str(tmp_path / "lib"), "--no-face-check"])
    assert rc == 1
    assert capsys.readouterr().err.strip() == f"deid: error: {v}: has no video stream"
    assert not (tmp_path / "lib" / "d3").exists()  # nothing registered
