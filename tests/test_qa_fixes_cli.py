"""Small CLI findings of a QA pass: what a user is told for a file where a folder was
expected, a failed probe in --json, a donor video without a picture, a file name that
starts with '-'."""


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
