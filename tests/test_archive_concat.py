"""Segment stitching by remux (deid.io.concat): a segmented render joined without
re-encoding has exactly the frame count and timestamps of a whole-video run."""

from fractions import Fraction

import av
import numpy as np
import pytest

from deid.config import Config
from deid.errors import InvalidInputError, VideoEncodeError
from deid.io import VideoWriter, has_sensitive_tags, probe, read_frames, scan_stream
from deid.io.concat import concat_segments
from deid.pipeline import render_segment
from deid.testing import draw_frame, fake_components, make_synthetic_video

CFG = Config().replace("io.chunk_size=8", "track.lookahead=24", "track.pose_fallback=false", "audit.sample_frames=8")


def packets(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [(p.pts, p.dts) for p in c.demux(s) if p.size]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("concat")
    return make_synthetic_video(d / "patient.mp4", n_frames=70, with_audio=True,
                                metadata={"creation_time": "2022-01-01T00:00:00Z", "location": "+40.0-074.0/"})


@pytest.mark.parametrize("timing", ["keep", "cfr"])
def test_stitched_segments_match_a_whole_video_run(clip, tmp_path, timing):
    cfg = CFG.replace(f"io.timing={timing}")
    comp = fake_components(cfg, ["blur"], pose=None)
    info = probe(clip.path)
    origin = int(scan_stream(clip.path).pts[0])
    render_segment(str(clip.path), info, {"blur": tmp_path / "whole.mp4"}, cfg, comp)
    parts = []
    for k, (a, b) in enumerate([(0, 25), (25, 50), (50, 70)]):
        p = tmp_path / f"seg{k}.mp4"
        r = render_segment(str(clip.path), info, {"blur": p}, cfg, comp, start=a, stop=b, context=24, pts_origin=origin)
        assert r.written == {"blur": b - a}
        parts.append(p)
    # B-frames: a segment's first packets decode before they are shown
    assert any(d < pts for pts, d in packets(parts[1])[:3])
    st = concat_segments(parts, tmp_path / "joined.mp4")
    assert st.frames == 70 and st.segments == 3
    joined, whole = packets(tmp_path / "joined.mp4"), packets(tmp_path / "whole.mp4")
    dts = [d for _, d in joined]
    assert all(b > a for a, b in zip(dts, dts[1:])), "decode timestamps strictly increase across junctions"
    assert all(d <= p for p, d in joined)
    assert list(scan_stream(tmp_path / "joined.mp4").pts) == list(scan_stream(tmp_path / "whole.mp4").pts)
    assert sorted(p for p, _ in joined) == sorted(p for p, _ in whole)
    info_j = probe(tmp_path / "joined.mp4")
    assert info_j.frame_count == 70 and (info_j.width, info_j.height) == (160, 120)
    assert not info_j.has_audio and has_sensitive_tags(tmp_path / "joined.mp4") == []
    # every frame decodes, and looks like the whole-video render (only encoder noise differs)
    fj, fw = read_frames(tmp_path / "joined.mp4"), read_frames(tmp_path / "whole.mp4")
    assert len(fj) == len(fw) == 70
    diff = max(float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) for a, b in zip(fj, fw))
    assert diff < 4.0, diff


def _write(path, pts_list, size=(160, 120), time_base=Fraction(1, 12800), fps=25):
    with VideoWriter(path, size[0], size[1], fps, timing="keep", time_base=time_base, pts_origin=0) as w:
        for k, t in enumerate(pts_list):
            img, _ = draw_frame(k, len(pts_list), *size)
            w.write(img, t)
    return path


def test_junction_with_a_longer_decode_delay_keeps_dts_increasing(tmp_path):
    # a segment whose frames come further apart (VFR) starts decoding earlier, before the
    # previous segment's last decode timestamp: the remux must raise those dts
    a = [i * 512 for i in range(10)]
    b = [5120 + j * 2048 for j in range(10)]
    _write(tmp_path / "a.mp4", a)
    _write(tmp_path / "b.mp4", b)
    assert packets(tmp_path / "b.mp4")[0][1] < packets(tmp_path / "a.mp4")[-1][1]
    st = concat_segments([tmp_path / "a.mp4", tmp_path / "b.mp4"], tmp_path / "j.mp4")
    assert st.dts_adjusted > 0
    pk = packets(tmp_path / "j.mp4")
    assert all(y[1] > x[1] for x, y in zip(pk, pk[1:])) and all(d <= p for p, d in pk)
    assert list(scan_stream(tmp_path / "j.mp4").pts) == a + b, "presentation timestamps untouched"
    assert len(read_frames(tmp_path / "j.mp4")) == 20


@pytest.mark.parametrize("den,step", [(24000, 1001), (15360, 512)])
def test_segments_starting_off_the_millisecond_keep_exact_timestamps(tmp_path, den, step):
    # 23.976 fps (1/24000) and 30 fps in Matroska's usual 1/15360: frame 40 is not on a
    # whole millisecond; MP4's default movie timescale (1000) used to round the
    # segment's start down, shifting the whole segment by up to a millisecond
    tb, fps = Fraction(1, den), den / step
    a = [i * step for i in range(40)]
    b = [(40 + i) * step for i in range(12)]
    _write(tmp_path / "a.mp4", a, time_base=tb, fps=fps)
    _write(tmp_path / "b.mp4", b, time_base=tb, fps=fps)
    assert list(scan_stream(tmp_path / "b.mp4").pts) == b
    concat_segments([tmp_path / "a.mp4", tmp_path / "b.mp4"], tmp_path / "j.mp4")
    assert list(scan_stream(tmp_path / "j.mp4").pts) == a + b


def test_audio_is_copied_only_when_asked(clip, tmp_path):
    seg = _write(tmp_path / "s.mp4", [i * 512 for i in range(70)])
    concat_segments([seg], tmp_path / "with.mp4", audio_from=clip.path)
    info = probe(tmp_path / "with.mp4")
    assert info.has_audio and info.frame_count == 70
    assert has_sensitive_tags(tmp_path / "with.mp4") == []


def test_segments_that_cannot_be_joined_are_errors(tmp_path):
    a = _write(tmp_path / "a.mp4", [i * 512 for i in range(8)])
    small = _write(tmp_path / "small.mp4", [(8 + i) * 512 for i in range(8)], size=(96, 64))
    with pytest.raises(VideoEncodeError, match="width, height"):
        concat_segments([a, small], tmp_path / "x.mp4")
    overlap = _write(tmp_path / "o.mp4", [(4 + i) * 512 for i in range(8)])
    with pytest.raises(VideoEncodeError, match="overlap or are out of order"):
        concat_segments([a, overlap], tmp_path / "y.mp4")
    with pytest.raises(InvalidInputError, match="missing or empty"):
        concat_segments([a, tmp_path / "gone.mp4"], tmp_path / "z.mp4")
    with pytest.raises(InvalidInputError, match="no segments"):
        concat_segments([], tmp_path / "w.mp4")


def test_a_repeated_timestamp_at_a_junction_is_moved_a_tick_not_refused(tmp_path):
    """An input whose frame repeats the previous frame's timestamp right at a segment
    boundary: the whole-video writer moves the repeat one tick later, so the stitch does
    the same with that segment instead of failing the video; a real overlap still fails."""
    a = [i * 512 for i in range(10)]
    b = [a[-1] + j * 512 for j in range(10)]  # b's first frame repeats a's last timestamp
    _write(tmp_path / "a.mp4", a)
    _write(tmp_path / "b.mp4", b)
    st = concat_segments([tmp_path / "a.mp4", tmp_path / "b.mp4"], tmp_path / "j.mp4")
    assert st.junctions_nudged == 1 and st.frames == 20
    assert list(scan_stream(tmp_path / "j.mp4").pts) == a + [t + 1 for t in b]
    assert len(read_frames(tmp_path / "j.mp4")) == 20
    _write(tmp_path / "c.mp4", [a[5] + j * 512 for j in range(10)])  # half of it over a: an overlap
    with pytest.raises(VideoEncodeError, match="overlap"):
        concat_segments([tmp_path / "a.mp4", tmp_path / "c.mp4"], tmp_path / "k.mp4")
