"""Video I/O: probe, streaming decode, metadata-free atomic encode, output safety."""

import os
from pathlib import Path
from fractions import Fraction

import av
import numpy as np
import pytest

from conftest import media_path
from deid.errors import InvalidInputError, OutputExistsError, VideoDecodeError
from deid.io import (
    VideoReader,
    VideoWriter,
    atomic_output,
    check_output_path,
    container_tags,
    has_sensitive_tags,
    probe,
    read_frames,
    remove_stale_partials,
    scan_stream,
    upright,
)
from deid.testing import make_synthetic_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("io")
    return make_synthetic_video(
        d / "clip.mp4",
        n_frames=30,
        width=96,
        height=64,
        with_audio=True,
        metadata={"creation_time": "2021-03-04T05:06:07Z", "location": "+51.5-000.1/", "title": "Patient 123"},
    )


def test_probe_synthetic(clip):
    info = probe(clip.path)
    assert (info.width, info.height, info.frame_count) == (96, 64, 30)
    assert info.fps == pytest.approx(25.0)
    assert info.has_audio and not info.is_vfr and info.rotation == 0
    assert info.duration == pytest.approx(1.2, abs=0.1)


def test_streaming_decode_in_chunks(clip):
    r = VideoReader(clip.path, chunk_size=7)
    sizes, starts = [], []
    for b in r:
        sizes.append(len(b))
        starts.append(b.start)
        assert all(f.shape == (64, 96, 3) and f.dtype == np.uint8 for f in b.frames)
    assert sizes == [7, 7, 7, 7, 2]
    assert starts == [0, 7, 14, 21, 28]
    assert r.stats.frames_read == 30 and not r.stats.partial


def test_batches_are_bounded_in_bytes(clip):
    from deid.io.decode import batch_frames

    assert batch_frames(32, 1920, 1080, 64) == 10  # 6.2 MB frames
    assert batch_frames(32, 3840, 2160, 64) == 2
    assert batch_frames(32, 426, 240, 64) == 32  # small frames: the frame count decides
    assert batch_frames(32, 7680, 4320, 1) == 1  # never empty
    assert batch_frames(32, 7680, 4320, None) == 32
    per = 96 * 64 * 3
    r = VideoReader(clip.path, chunk_size=32, batch_mb=5.5 * per / (1 << 20))
    assert r.chunk_size == 5
    sizes = [len(b) for b in r]
    assert sizes == [5] * 6 and r.stats.frames_read == 30


def test_sparse_read_matches_full_read(clip):
    full = read_frames(clip.path)
    idx = [17, 3, 3, 0, len(full) - 1, len(full) + 5]  # any order, repeats, one past the end
    got = read_frames(clip.path, idx)
    assert len(got) == 5 and all(np.array_equal(a, full[i]) for a, i in zip(got, idx))
    # frames outside ``select`` are decoded but not converted
    batches = list(VideoReader(clip.path, select={2, 5}, chunk_size=4, stop=8))
    flat = [f for b in batches for f in b.frames]
    assert [i for i, f in enumerate(flat) if f is not None] == [2, 5] and len(flat) == 8
    assert np.array_equal(flat[5], full[5])


def test_range_read_matches_full_read(clip):
    full = read_frames(clip.path)
    part = [f for b in VideoReader(clip.path, start=11, stop=19, chunk_size=4) for f in b.frames]
    assert len(part) == 8
    for a, b in zip(part, full[11:19]):
        assert np.array_equal(a, b)


def test_upright_rotations():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert upright(img, 0) is img
    r90 = upright(img, 90)
    assert r90.shape == (3, 2, 3)
    # clockwise: the top-left pixel moves to the top-right
    assert np.array_equal(r90[0, -1], img[0, 0])
    assert np.array_equal(upright(img, 180), img[::-1, ::-1])
    assert np.array_equal(upright(upright(img, 90), 270), img)


def _encode(path, frames, **kw):
    h, w = frames[0].shape[:2]
    with VideoWriter(path, w, h, 25.0, **kw) as wr:
        for i, f in enumerate(frames):
            wr.write(f, pts=i * 512)
    return path


def test_writer_strips_metadata_and_audio(clip, tmp_path):
    assert has_sensitive_tags(clip.path), "fixture should carry identifying tags"
    frames = read_frames(clip.path)
    out = _encode(tmp_path / "o.mp4", frames, time_base=Fraction(1, 12800))
    info = probe(out)
    assert info.frame_count == 30 and not info.has_audio
    assert has_sensitive_tags(out) == []
    tags = container_tags(out)
    assert "encoder" not in tags["format"] and "creation_time" not in tags["format"]
    raw = out.read_bytes()
    assert b"x264 - core" not in raw and b"Lavf" not in raw  # encoder banners filtered out
    assert b"Patient 123" not in raw


def test_writer_keeps_audio_when_asked(clip, tmp_path):
    frames = read_frames(clip.path)
    out = tmp_path / "a.mp4"
    with VideoWriter(out, 96, 64, 25.0, audio_from=clip.path) as wr:
        for f in frames:
            wr.write(f)
    assert probe(out).has_audio
    assert has_sensitive_tags(out) == []


def test_writer_pads_odd_sizes(tmp_path):
    frames = [np.full((33, 47, 3), i * 7, np.uint8) for i in range(5)]
    out = _encode(tmp_path / "odd.mp4", frames)
    info = probe(out)
    assert (info.width, info.height) == (48, 34) and info.frame_count == 5


def test_writer_keeps_vfr_timestamps(tmp_path):
    pts = [0, 10, 20, 60, 70, 150]
    out = tmp_path / "vfr.mp4"
    with VideoWriter(out, 32, 32, 25.0, time_base=Fraction(1, 100)) as wr:
        for p in pts:
            wr.write(np.zeros((32, 32, 3), np.uint8), pts=p)
    with av.open(str(out)) as c:
        got = [f.pts for f in c.decode(video=0)]
        tb = c.streams.video[0].time_base
    times = [float(p * tb) for p in got]
    assert times == pytest.approx([p / 100 for p in pts], abs=0.011)
    assert probe(out).is_vfr


def test_writer_rejects_wrong_frames(tmp_path):
    from deid.errors import VideoEncodeError

    with pytest.raises(VideoEncodeError, match="expected 32x32"):
        with VideoWriter(tmp_path / "x.mp4", 32, 32, 25.0) as wr:
            wr.write(np.zeros((16, 32, 3), np.uint8))


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with atomic_output(final) as tmp:
            tmp.write_bytes(b"half")
            assert tmp.name.startswith(".out.mp4.partial-")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(final) as tmp:
        tmp.write_bytes(b"whole")
    assert final.read_bytes() == b"whole" and len(list(tmp_path.iterdir())) == 1


def test_stale_partials_are_removed(tmp_path):
    (tmp_path / ".a.mp4.partial-1234.mp4").write_bytes(b"x")
    (tmp_path / "keep.mp4").write_bytes(b"y")
    removed = remove_stale_partials(tmp_path)
    assert len(removed) == 1 and (tmp_path / "keep.mp4").exists()
    # another run writing into the same folder right now: its temporary is left alone;
    # a killed process's is removed, in sub-folders too when asked
    import subprocess
    import sys

    from deid.io.atomic import temp_path_for

    live = temp_path_for(tmp_path / "b.mp4")
    live.write_bytes(b"being written")
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    dead = tmp_path / "sub" / live.name.replace(f"p{os.getpid()}-", f"p{gone}-")
    dead.parent.mkdir()
    dead.write_bytes(b"killed")
    assert remove_stale_partials(tmp_path) == [] and dead.exists()
    # another host's (a folder shared over the network): its writer may be running there
    from deid.io.atomic import PARTIAL_MARK, _owner_tag

    host = "000000" if not _owner_tag().startswith("000000") else "111111"
    other_host = tmp_path / "sub" / f".c.mp4{PARTIAL_MARK}{host}p{os.getpid()}-abcd1234.mp4"
    other_host.write_bytes(b"elsewhere")
    assert remove_stale_partials(tmp_path, recursive=True, this_host_only=True) == [dead] and other_host.exists()
    assert remove_stale_partials(tmp_path, recursive=True) == [other_host] and live.exists()


def test_output_safety(tmp_path):
    src = tmp_path / "in.mp4"
    src.write_bytes(b"data")
    with pytest.raises(InvalidInputError, match="over its input"):
        check_output_path(src, [src], overwrite=True)
    link = tmp_path / "link.mp4"
    os.symlink(src, link)
    with pytest.raises(InvalidInputError, match="over its input"):
        check_output_path(link, [src], overwrite=True)
    out = tmp_path / "o.mp4"
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_output_path(out, [src])
    assert check_output_path(out, [src], overwrite=True) == out


def test_missing_and_directory_inputs(tmp_path):
    with pytest.raises(InvalidInputError, match="no such file"):
        probe(tmp_path / "missing.mp4")
    with pytest.raises(InvalidInputError, match="directory"):
        probe(tmp_path)
    if hasattr(os, "mkfifo"):  # a pipe named like a video: refused at once, never read (it may never end)
        fifo = tmp_path / "camera.mp4"
        os.mkfifo(fifo)
        with pytest.raises(InvalidInputError, match="not a regular file"):
            probe(fifo)


# ----------------------------------------------------------------------------- real media


@pytest.mark.media
@pytest.mark.parametrize(
    "name, fragment",
    [
        ("empty.mp4", "empty (0 bytes)"),
        ("not_a_video.mp4", "not a video file"),
    ],
)
def test_bad_media_probe_errors(name, fragment):
    p = media_path(f"video/bad/{name}")
    with pytest.raises(InvalidInputError) as ei:
        probe(p)
    msg = str(ei.value)
    assert fragment in msg and name in msg and "\n" not in msg


@pytest.mark.media
def test_corrupt_stream_names_last_good_frame():
    p = media_path("video/bad/corrupted.mp4")
    info = probe(p)
    assert info.frame_count == 50
    with pytest.raises(VideoDecodeError) as ei:
        for _ in VideoReader(p, info=info):
            pass
    assert "last good frame is 27" in str(ei.value) and ei.value.last_good_frame == 27
    r = VideoReader(p, info=info, on_corrupt="keep_partial")
    n = sum(len(b) for b in r)
    assert n == 28 and r.stats.partial and "last good frame" in r.stats.error


@pytest.mark.media
def test_reordered_timestamps_decode_in_presentation_order():
    """unordered.mov stores B-frames (decode order 0, 3, 1, 2 by timestamp): it must come
    out as 4 frames in presentation order with increasing timestamps."""
    p = media_path("video/bad/unordered.mov")
    pts = [t for b in VideoReader(p) for t in b.pts]
    assert len(pts) == 4 and pts == sorted(pts)


@pytest.mark.media
@pytest.mark.parametrize("deg", [0, 90, 180, 270])
def test_rotated_media_comes_out_upright(deg):
    p = media_path(f"video/rotation/video_{deg}.mov")
    info = probe(p)
    assert info.rotation == deg
    frames = read_frames(p)
    expect = (568, 320) if deg in (0, 180) else (320, 568)
    assert (info.width, info.height) == expect
    assert all(f.shape[:2] == (expect[1], expect[0]) for f in frames)
    # a sparse read (only the frames asked for are converted) gives the same upright frames
    some = read_frames(p, [len(frames) - 1, 1])
    assert np.array_equal(some[0], frames[-1]) and np.array_equal(some[1], frames[1])
    # decord turns frames upright itself: the same pictures, not turned twice
    dec = [f for b in VideoReader(p, decoder="decord", stop=3) for f in b.frames]
    assert all(np.abs(a.astype(int) - b.astype(int)).mean() < 2 for a, b in zip(dec, frames[:3]))
    # (the four clips film different scenes, so content is checked by eye once — see
    # docs/io.md — and the rotation maths by test_upright_rotations)


def test_mkv_output_carries_no_identifying_tags(clip, tmp_path):
    frames = read_frames(clip.path)
    out = tmp_path / "o.mkv"
    with VideoWriter(out, 96, 64, 25.0) as wr:
        for f in frames:
            wr.write(f)
    assert probe(out).frame_count == 30 and has_sensitive_tags(out) == []
    assert b"Patient 123" not in out.read_bytes()


def _remux_shifted(src, dst, video_shift_s: float) -> None:
    """Copy ``src`` with its video packets moved by ``video_shift_s`` seconds (audio
    untouched). Negative: the first frames fall before 0 and the MP4 muxer writes an
    edit list that hides them (what a lossless trim in an editor produces). Positive:
    the picture starts after the sound."""
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        outs = {s.index: o.add_stream_from_template(s) for s in (i.streams.video[0], *i.streams.audio[:1])}
        v = i.streams.video[0]
        shift = int(round(video_shift_s / float(v.time_base)))
        for p in i.demux(*(s for s in i.streams if s.index in outs)):
            if p.dts is None:
                continue
            if p.stream.index == v.index:
                p.pts += shift
                p.dts += shift
            p.stream = outs[p.stream.index]
            o.mux(p)


def test_edit_list_trimmed_mp4_is_read_as_shown(tmp_path):
    src = make_synthetic_video(tmp_path / "src.mp4", n_frames=30, width=64, height=48)
    _remux_shifted(src.path, tmp_path / "trim.mp4", -5 / 25)
    with av.open(str(tmp_path / "trim.mp4")) as c:
        pk = [p for p in c.demux(video=0) if p.size]
    assert len(pk) == 30 and sum(p.is_discard for p in pk) == 5  # the edit list hides 5 frames
    info = probe(tmp_path / "trim.mp4")
    assert info.frame_count == 25 and info.start_time == pytest.approx(0.0, abs=1e-6)
    frames = [f for b in VideoReader(tmp_path / "trim.mp4", chunk_size=8) for f in b.frames]
    assert len(frames) == 25
    original = read_frames(src.path)
    assert np.abs(frames[0].astype(int) - original[5].astype(int)).mean() < 3  # frame 0 shown = frame 5 stored
    part = [f for b in VideoReader(tmp_path / "trim.mp4", start=12, stop=20) for f in b.frames]
    assert len(part) == 8 and all(np.array_equal(a, b) for a, b in zip(part, frames[12:20]))


def test_duration_is_the_video_s_own_length_not_the_container_s(tmp_path):
    """A Matroska recording whose first frame is at 40 s: the container's duration
    counts from 0 (42.4 s); the video is 2.4 s long."""
    src = make_synthetic_video(tmp_path / "src.mp4", n_frames=60, width=64, height=48)
    late = tmp_path / "late.mkv"
    _remux_shifted(src.path, late, 40.0)
    with av.open(str(late)) as c:
        assert c.duration / av.time_base > 40  # the premise: the container counts from 0
    info = probe(late)
    assert info.start_time == pytest.approx(40.0, abs=0.01)
    assert info.frame_count == 60
    assert info.duration == pytest.approx(2.4, abs=0.01)


def _audio_span(path) -> tuple[float, float]:
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        ps = [p for p in c.demux(a) if p.pts is not None and p.size]
        return float(ps[0].pts * a.time_base), float((ps[-1].pts + ps[-1].duration) * a.time_base)


def test_kept_audio_follows_a_late_first_frame(clip, tmp_path):
    """The input's picture starts 0.4 s after its sound; the output's picture starts at
    0, so the sound must move back by 0.4 s too (else it runs 0.4 s late all along)."""
    from deid.io.concat import concat_segments

    late = tmp_path / "late.mp4"
    _remux_shifted(clip.path, late, 0.4)
    info = probe(late)
    assert info.start_time == pytest.approx(0.4, abs=0.01)
    a0, a1 = _audio_span(late)
    frames = read_frames(late)
    out = tmp_path / "out.mp4"
    with VideoWriter.like(out, info, _IO(), audio_from=late, audio_offset=info.start_time) as wr:
        for f in frames:
            wr.write(f)
    with av.open(str(out)) as c:
        assert float(next(c.decode(video=0)).time) == pytest.approx(0.0, abs=1e-6)
    b0, b1 = _audio_span(out)
    assert 0.0 <= b0 < 0.06  # at most one audio frame (the one straddling 0) dropped
    assert b1 == pytest.approx(a1 - 0.4, abs=0.01)  # the same sound, 0.4 s earlier
    joined = tmp_path / "joined.mp4"
    concat_segments([out], joined, audio_from=late, audio_offset=info.start_time)
    assert _audio_span(joined) == pytest.approx((b0, b1), abs=0.01)


class _IO:
    crf, preset, timing = 23, "ultrafast", "keep"


def test_a_millisecond_clock_is_not_a_variable_frame_rate():
    """30 fps on Matroska's millisecond clock steps 33, 33, 34 ms (as the shared pancake
    clip does), and so does its copy on a 1/16000 time base: constant. One dropped frame
    or a rate change is variable."""
    from deid.io.probe import _is_vfr

    ms = np.round(np.arange(310) * 1000 / 30).astype(np.int64)
    assert not _is_vfr(ms, Fraction(1, 1000)) and not _is_vfr(ms * 16, Fraction(1, 16000))
    dropped = np.delete(ms, 150) * 16
    assert _is_vfr(dropped, Fraction(1, 16000))
    changed = np.concatenate([ms[:100], ms[99] + np.round(np.arange(1, 101) * 1000 / 24).astype(np.int64)])
    assert _is_vfr(changed, Fraction(1, 1000))


def test_decord_decoder_keeps_the_stream_timestamps(tmp_path):
    """With io.decoder=decord the frames carry the stream's own timestamps (what the
    writer keeps), not milliseconds read as stream ticks; a VFR clip keeps its gaps."""
    pts = [0, 10, 20, 60, 70, 150, 160]
    src = tmp_path / "vfr.mp4"
    with VideoWriter(src, 32, 32, 25.0, time_base=Fraction(1, 100)) as wr:
        for k, p in enumerate(pts):
            wr.write(np.full((32, 32, 3), 30 * k, np.uint8), pts=p)
    ref = [(b.time_base, t) for b in VideoReader(src) for t in b.pts]
    got = [(b.time_base, t) for b in VideoReader(src, decoder="decord", chunk_size=3) for t in b.pts]
    assert got == ref and len(got) == len(pts)
    seg = [t for b in VideoReader(src, decoder="decord", start=2, stop=5) for t in b.pts]
    assert seg == [t for _, t in ref[2:5]]


def test_a_transport_stream_cut_mid_gop_is_read_from_its_first_keyframe(tmp_path):
    """A .ts capture that starts mid-GOP opens with packets whose references are not in
    the file; they are not frames of the video (the decoder drops them), so they are not
    counted, and the video is read whole instead of failing as 'ended early'."""
    full, cut = tmp_path / "full.ts", tmp_path / "cut.ts"
    with av.open(str(full), "w", format="mpegts") as o:
        s = o.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = {"g": "10", "bf": "2"}
        for i in range(40):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 5, np.uint8), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                o.mux(p)
        for p in s.encode(None):
            o.mux(p)
    with av.open(str(full)) as i, av.open(str(cut), "w", format="mpegts") as o:
        vs = o.add_stream_from_template(i.streams.video[0])
        pk = [p for p in i.demux(video=0) if p.dts is not None]
        for p in pk[3:]:  # the recording starts 3 packets into the first GOP
            p.stream = vs
            o.mux(p)
    assert probe(full).frame_count == 40
    info = probe(cut)
    frames = [f for b in VideoReader(cut) for f in b.frames]
    assert info.frame_count == len(frames) == 30  # from the second GOP's keyframe on
    assert np.abs(frames[0].astype(int) - 50).max() <= 3  # frame 10 of the recording (value 10 * 5)


@pytest.mark.parametrize("name, codec, pix, fmt", [
    ("hevc10.mov", "libx265", "yuv420p10le", None),  # phone video: HEVC, 10 bit
    ("vp9.webm", "libvpx-vp9", "yuv420p", None),
    ("mpeg2.ts", "mpeg2video", "yuv420p", "mpegts"),  # hospital / broadcast recorders
    ("prores.mov", "prores_ks", "yuv422p10le", None),  # editing suites
    ("mjpeg.avi", "mjpeg", "yuvj420p", None),  # older cameras
])
def test_common_source_codecs_decode_to_the_frames_they_hold(tmp_path, name, codec, pix, fmt):
    path = tmp_path / name
    with av.open(str(path), "w", format=fmt) as o:
        s = o.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = 96, 64, pix
        if codec == "libx265":
            s.options = {"x265-params": "log-level=error"}
        for i in range(12):
            f = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 20 * i, np.uint8), format="rgb24").reformat(format=pix)
            for p in s.encode(f):
                o.mux(p)
        for p in s.encode(None):
            o.mux(p)
    info = probe(path)
    frames = [f for b in VideoReader(path, chunk_size=5) for f in b.frames]
    assert info.frame_count == len(frames) == 12 and (info.width, info.height) == (96, 64)
    assert [int(np.median(f)) for f in frames] == pytest.approx([20 * i for i in range(12)], abs=4)
    out = _encode(tmp_path / "o.mp4", frames)
    assert probe(out).frame_count == 12 and probe(out).codec == "h264"


def _gop_ts(path, codec, n=60, gop=12):
    """An MPEG-TS clip with B-frames and a keyframe every ``gop`` frames; every frame
    differs (a moving bar over a ramp) so a frame read at the wrong index shows."""
    with av.open(str(path), "w", format="mpegts") as o:
        s = o.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = {"g": str(gop), "bf": "2"} if codec == "mpeg2video" else {"g": str(gop), "bf": "2", "preset": "ultrafast"}
        for i in range(n):
            a = np.zeros((48, 64, 3), np.uint8)
            a[:, :, 0] = np.arange(64, dtype=np.uint8)[None, :] * 3
            a[:, i % 64, 1] = 255
            a[:, :, 2] = 4 * i
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            f.pts = i
            for p in s.encode(f):
                o.mux(p)
        for p in s.encode(None):
            o.mux(p)
    return path


@pytest.mark.parametrize("codec", ["libx264", "mpeg2video"])
def test_transport_stream_range_reads_match_a_whole_read(tmp_path, codec):
    """An MPEG-TS file has no index: FFmpeg's seek there lands a GOP late (and for
    MPEG-2, past even the first keyframe). A range read decodes from a keyframe at or
    before its first frame, so it holds exactly the frames (and timestamps) of a whole
    read at those indices, whether it starts on a keyframe, just after one or mid-GOP."""
    path = _gop_ts(tmp_path / f"{codec}.ts", codec)
    info = probe(path)
    assert info.frame_count == 60
    whole = [(i, f, t) for b in VideoReader(path, chunk_size=7) for i, f, t in zip(b.indices(), b.frames, b.pts)]
    assert [i for i, _, _ in whole] == list(range(60))
    for start, stop in [(1, 9), (12, 20), (13, 30), (16, 36), (23, 25), (40, 60), (5, 59), (59, 60)]:
        r = VideoReader(path, start=start, stop=stop, chunk_size=5)
        got = [(i, f, t) for b in r for i, f, t in zip(b.indices(), b.frames, b.pts)]
        assert [i for i, _, _ in got] == list(range(start, stop)), (start, stop)
        assert [t for _, _, t in got] == [t for _, _, t in whole[start:stop]]
        assert all(np.array_equal(f, w) for (_, f, _), (_, w, _) in zip(got, whole[start:stop])), (start, stop)
        assert r.stats.frames_read == r.stats.expected == stop - start and not r.stats.partial


def test_a_range_read_never_skips_frames_silently(tmp_path, monkeypatch):
    """Frames missing inside [start, stop) stop the read at the last good frame (fail, or
    a partial read that is a prefix) instead of coming back with a hole."""
    path = _gop_ts(tmp_path / "gap.ts", "libx264")
    lost = {int(t) for t in scan_stream(path).pts[20:23]}
    real = av.container.InputContainer.decode

    def decode(self, *a, **k):  # the decoder loses frames 20..22
        for f in real(self, *a, **k):
            if f.pts not in lost:
                yield f

    monkeypatch.setattr(av.container.InputContainer, "decode", decode)
    with pytest.raises(VideoDecodeError, match=r"frames 20\.\.22 missing.*last good frame is 19"):
        list(VideoReader(path, start=14, stop=30))
    r = VideoReader(path, start=14, stop=30, on_corrupt="keep_partial", chunk_size=4)
    got = [i for b in r for i in b.indices()]
    assert got == list(range(14, 20)) and r.stats.partial


def test_long_file_names_get_temporaries_that_fit(tmp_path):
    """An output name near the 255-byte limit (80 CJK characters) is valid; its hidden
    temporary, longer by the owner tag, must still be creatable."""
    from deid.io.atomic import NAME_MAX, temp_path_for

    final = tmp_path / ("患者" * 40 + ".blur.mp4")  # 249 bytes
    assert len(final.name.encode()) <= NAME_MAX
    tmp = temp_path_for(final)
    assert len(tmp.name.encode()) <= NAME_MAX and tmp.name.startswith(".患者") and tmp.suffix == ".mp4"
    with atomic_output(final) as t:
        Path(t).write_bytes(b"x")
    assert final.read_bytes() == b"x"
    assert remove_stale_partials(tmp_path) == []


def _two_video_streams(path: Path, first: tuple[int, int, int], second: tuple[int, int, int]) -> Path:
    """A file with two video streams, ``(width, height, frames)`` each, muxed in that
    order; the first stream's frames are dark, the second's bright (with noise, as a
    camera's are)."""
    rng = np.random.default_rng(0)
    out = av.open(str(path), "w")
    streams = []
    for (w, h, _), codec in zip((first, second), ("mjpeg" if first[2] == 1 else "mpeg4", "mpeg4")):
        s = out.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuvj420p" if codec == "mjpeg" else "yuv420p"
        streams.append(s)
    for s, (w, h, n), level in zip(streams, (first, second), (20, 220)):
        for _ in range(n):
            img = np.clip(level + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    out.close()
    return path


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
@pytest.mark.parametrize("ext", ["mkv", "avi"])
def test_a_cover_picture_listed_first_is_not_taken_for_the_video(tmp_path, ext, decoder):
    """An MKV / AVI may carry a one-frame MJPEG image (cover, thumbnail) as its first
    video stream; the video is the stream a player shows, not stream 0."""
    p = _two_video_streams(tmp_path / f"cover.{ext}", (64, 48, 1), (128, 96, 10))
    info = probe(p)
    assert (info.width, info.height, info.frame_count) == (128, 96, 10)
    assert info.other_video_streams == 0  # a still picture is not another video (and is not written either)
    frames = [f for b in VideoReader(p, decoder=decoder) for f in b.frames]
    assert len(frames) == 10 and all(f.shape == (96, 128, 3) and f.mean() > 150 for f in frames)


def test_a_second_camera_is_counted_and_left_out(tmp_path, caplog):
    from deid.config import Config
    from deid.pipeline import process_video

    p = _two_video_streams(tmp_path / "two_cameras.mkv", (96, 64, 12), (48, 32, 12))
    info = probe(p)
    assert (info.width, info.height) == (96, 64) and info.other_video_streams == 1
    out = tmp_path / "out"
    cfg = Config().replace("audit.leak_check=false", "track.pose_fallback=false", "detect.backend=color")
    with caplog.at_level("WARNING", logger="deid.pipeline"):
        r = process_video(p, out, ["mask"], cfg, sha256=False)
    assert r.status == "done", r.error
    assert "1 more video stream" in caplog.text
    written = av.open(str(out / "two_cameras.mask.mp4"))
    assert len(written.streams.video) == 1 and written.streams.video[0].width == 96
    written.close()


def test_a_mid_stream_resolution_change_is_scaled_to_the_first_size(tmp_path, caplog):
    """An MPEG-TS recording may switch resolution (adaptive bitrate): frames after the
    switch are scaled to the video's size, counted, and the video still goes through."""
    parts = []
    for name, (w, h) in (("p1", (160, 120)), ("p2", (320, 240))):
        out = av.open(str(tmp_path / f"{name}.ts"), "w")
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(12):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((h, w, 3), 40 + 10 * i, np.uint8), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
        out.close()
        parts.append((tmp_path / f"{name}.ts").read_bytes())
    clip = tmp_path / "switch.ts"
    clip.write_bytes(b"".join(parts))  # TS concatenates byte-wise
    info = probe(clip)
    assert (info.width, info.height, info.frame_count) == (160, 120, 24)
    reader = VideoReader(clip)
    frames = [f for b in reader for f in b.frames]
    assert len(frames) == 24 and all(f.shape == (120, 160, 3) for f in frames)
    assert reader.stats.rescaled == 12 and "320x240" in reader.stats.notes[0]
    assert reader.stats.rescaled_runs == [[12, 24]] and reader.stats.rescaled_in(10, 15) == 3
    assert abs(float(frames[-1].mean()) - (40 + 110)) < 4  # the scaled frames keep their content

    from deid.config import Config
    from deid.pipeline import process_video

    cfg = Config().replace("audit.leak_check=false", "track.pose_fallback=false", "detect.backend=color")
    r = process_video(clip, tmp_path / "out", ["mask"], cfg, sha256=False)
    assert r.status == "done", r.error
    assert r.counts["frames_rescaled"] == 12 and probe(tmp_path / "out" / "switch.mask.mp4").frame_count == 24


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_writer_names_a_full_disk_and_the_output_not_the_temporary():
    """FFmpeg's ENOSPC (here from /dev/full, which refuses every write) comes out as an
    OutputWriteError naming the writer's label, not FFmpeg's file name."""
    from deid.errors import OutputWriteError

    w = VideoWriter("/dev/full", 64, 48, 25.0, label="clip.mp4: blur output")
    with pytest.raises(OutputWriteError) as e:
        for _ in range(60):
            w.write(np.zeros((48, 64, 3), np.uint8))
        w.close()
    assert str(e.value) == "clip.mp4: blur output: cannot write to /dev: No space left on device"
    assert e.value.kind == "output_write"
    w.abort()


def test_storage_errors_are_told_apart():
    import errno

    from deid.errors import OutputWriteError, storage_error

    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        err = storage_error(OSError(code, os.strerror(code), "/out/.x.partial.mp4"), "x.mp4: cannot write to /out")
        assert isinstance(err, OutputWriteError) and str(err) == f"x.mp4: cannot write to /out: {os.strerror(code)}"
    assert storage_error(OSError(errno.EIO, "Input/output error"), "x") is None
    assert storage_error(OSError(errno.ENOENT, "No such file"), "x") is None
    assert storage_error(RuntimeError("boom"), "x") is None


@pytest.mark.parametrize("codec", ["libx264", "mpeg2video"])
def test_sparse_reads_seek_and_hold_the_same_frames(tmp_path, codec, monkeypatch):
    """A few frames spread over a video with keyframes (the leak audit's samples) are
    read by seeking to the keyframe before each run of them, not by decoding everything
    up to the last one; the frames are those of a whole read, in the order asked, repeats
    kept, numbers past the end left out."""
    from deid.io import decode as D

    path = _gop_ts(tmp_path / f"{codec}.ts", codec, n=120, gop=12)
    whole = read_frames(path)
    idx = [100, 5, 61, 62, 5, 119, 30, 500]
    spans = D.sparse_spans(path, set(idx))
    assert spans == [(5, 6), (30, 31), (61, 63), (100, 101), (119, 120)]
    starts = []
    real = D.VideoReader.__init__

    def spy(self, *a, **k):
        starts.append(k.get("start", 0))
        real(self, *a, **k)

    monkeypatch.setattr(D.VideoReader, "__init__", spy)
    got = read_frames(path, idx)
    assert starts == [a for a, _ in spans]  # one range read per span, no read from frame 0
    assert len(got) == 7 and all(np.array_equal(f, whole[i]) for f, i in zip(got, [i for i in idx if i < 120]))
    # dense samples, or a video with one keyframe: decoding from the start is cheaper
    assert D.sparse_spans(path, set(range(0, 120, 3))) is None
    assert D.sparse_spans(_gop_ts(tmp_path / "one.ts", "libx264", n=60, gop=100), {3, 50}) is None


def test_a_failed_sparse_read_falls_back_to_reading_from_the_start(tmp_path, monkeypatch):
    from deid.io import decode as D

    path = _gop_ts(tmp_path / "x.ts", "libx264", n=120, gop=12)
    whole = read_frames(path)

    def broken(self, *a, **k):
        raise VideoDecodeError(f"{self.path}: seek failed")

    monkeypatch.setattr(D.VideoReader, "_decode_from", broken)
    got = read_frames(path, [90, 10, 50])
    assert all(np.array_equal(f, whole[i]) for f, i in zip(got, [90, 10, 50])) and len(got) == 3
