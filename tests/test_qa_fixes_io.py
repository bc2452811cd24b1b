"""Probe and writer on the QA pass's odd inputs: a sparse variable-rate clip."""

from fractions import Fraction

import av
import numpy as np
import pytest

from deid.cli import main
from deid.config import IOConfig
from deid.io import VideoWriter, probe
from deid.io.encode import cfr_rate


def _sparse_vfr(path, pts_ms=(0, 1000, 60000, 300000, 600000)):
    """5 frames at 0, 1, 60, 300 and 600 s in a Matroska file whose header says 25 fps."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.time_base = Fraction(1, 1000)
        for i, t in enumerate(pts_ms):
            vf = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            for pk in s.encode(vf):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return path


def test_a_sparse_vfr_clip_lasts_its_span_and_a_frame(tmp_path):
    info = probe(_sparse_vfr(tmp_path / "vfr.mkv"))
    assert info.is_vfr and info.frame_count == 5 and info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(600.04, abs=1e-6)  # not 749.5 (600 s + the median step)


def test_cfr_spaces_frames_at_the_average_rate_so_the_output_lasts_as_long(tmp_path):
    info = probe(_sparse_vfr(tmp_path / "vfr.mkv"))
    assert cfr_rate(info) == pytest.approx(5 / 600.04)
    out = tmp_path / "cfr.mp4"
    with VideoWriter.like(out, info, IOConfig(timing="cfr")) as w:
        for _ in range(5):
            w.write(np.zeros((48, 64, 3), np.uint8))
    got = probe(out)
    assert got.frame_count == 5 and not got.is_vfr
    assert got.duration == pytest.approx(600.0, rel=0.01)  # was 0.2 s: 5 frames at the header's 25 fps


def test_cfr_keeps_a_constant_rate_video_s_declared_rate(tmp_path):
    from deid.testing import make_synthetic_video

    src = make_synthetic_video(tmp_path / "c.mp4", n_frames=30, width=64, height=48, fps=30000 / 1001)
    info = probe(src.path)
    assert cfr_rate(info) == info.fps


def test_probe_names_a_vfr_clip_s_average_rate(tmp_path, capsys):
    assert main(["probe", str(_sparse_vfr(tmp_path / "vfr.mkv"))]) == 0
    out = capsys.readouterr().out
    assert "600.04 s" in out and "variable frame rate (0.008 fps on average)" in out
