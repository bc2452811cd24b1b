"""``probe(path) -> VideoInfo``: what a video is, without decoding all of it.

Frame count comes from the container when it records one, else from a demux-only scan
of packet timestamps (no decoding; fast even for long videos). The scan also tells
whether timestamps are variable (VFR) and gives the presentation-ordered timestamps
that segment reads need.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import InvalidInputError, VideoDecodeError
from ..types import VideoInfo

log = logging.getLogger(__name__)

av.logging.set_level(av.logging.PANIC)  # FFmpeg's own chatter; we report errors ourselves


@dataclass(frozen=True, eq=False)
class StreamScan:
    """Demux-only scan of the first video stream."""

    pts: np.ndarray  # int64 presentation timestamps of every packet, sorted
    time_base: Fraction
    keyframes: np.ndarray  # sorted pts of keyframe packets
    out_of_order: bool  # decode order != presentation order somewhere (B-frames or broken muxing)
    duplicates: int  # packets sharing a pts with another (broken timestamps)



#: File extensions searched for in input folders (batch CLI, archive scans, reference
#: and face-set folders). Files given by name are read whatever their extension.
VIDEO_EXTENSIONS = (
    ".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".wmv", ".mpg", ".mpeg",
    ".ts", ".mts", ".m2ts", ".mxf", ".3gp", ".flv", ".ogv",
)


def check_readable(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"{p}: no such file")
    if p.is_dir():
        raise InvalidInputError(f"{p}: is a directory, not a video file")
    if not os.access(p, os.R_OK):
        raise InvalidInputError(f"{p}: not readable (check permissions)")
    if not p.is_file():  # a device, FIFO or socket: no size, may never end, cannot be re-read
        raise InvalidInputError(f"{p}: not a regular file (a device, pipe or socket); save the video to a file first")
    if p.stat().st_size == 0:
        raise InvalidInputError(f"{p}: file is empty (0 bytes)")
    return p


def open_container(path: str | os.PathLike) -> "av.container.InputContainer":
    p = check_readable(path)
    try:
        c = av.open(str(p), mode="r", metadata_errors="ignore")
    except av.error.InvalidDataError:
        raise InvalidInputError(f"{p}: not a video file (unrecognised container format)") from None
    except av.error.FFmpegError as e:
        raise InvalidInputError(f"{p}: cannot open ({e.strerror or e})") from None
    if not c.streams.video:
        c.close()
        raise InvalidInputError(f"{p}: has no video stream")
    return c


def _still(s: "av.video.stream.VideoStream") -> bool:
    return bool(int(s.disposition) & int(av.stream.Disposition.attached_pic))


#: packets demuxed to tell a moving video stream from a one-picture one (only for files
#: with more than one video stream)
_SCAN_PACKETS = 400


@functools.lru_cache(maxsize=64)
def _main_index(path: str, size: int, mtime_ns: int) -> tuple[int, int]:
    """(index of the video stream to de-identify, how many other moving video streams)
    for a file with several video streams: the first one with more than one frame among
    its first packets (a cover picture or thumbnail, flagged or not, has one), else the
    first one that is not flagged as an attached picture."""
    c = av.open(path, mode="r", metadata_errors="ignore")
    try:
        cands = [s for s in c.streams.video if not _still(s)] or list(c.streams.video)
        packets = dict.fromkeys((s.index for s in cands), 0)
        try:
            for n, pkt in enumerate(c.demux(cands)):
                if pkt.size and pkt.stream.index in packets:
                    packets[pkt.stream.index] += 1
                if n >= _SCAN_PACKETS:
                    break
        except av.error.FFmpegError:
            pass  # a damaged file: what was read decides; decoding reports the damage
        moving = [i for i, k in packets.items() if k > 1]
        main = moving[0] if moving else cands[0].index
        return main, sum(1 for i in moving if i != main)
    finally:
        c.close()


def _choose(c: "av.container.InputContainer") -> tuple["av.video.stream.VideoStream", int]:
    video = list(c.streams.video)
    if len(video) == 1:
        return video[0], 0
    try:
        st = os.stat(c.name)
        index, others = _main_index(str(c.name), st.st_size, st.st_mtime_ns)
    except (OSError, av.error.FFmpegError):
        return next((s for s in video if not _still(s)), video[0]), 0
    return next(s for s in video if s.index == index), others


def main_video_stream(c: "av.container.InputContainer") -> "av.video.stream.VideoStream":
    """The video stream deid de-identifies: the first that moves. A still picture (cover
    art, a thumbnail: an MKV or AVI may list one as a plain one-frame MJPEG stream, even
    first) is not the video; nor is FFmpeg's own pick (``av_find_best_stream``) reliable
    here: it ranks by the frames its probe happened to decode and chose such a picture."""
    return _choose(c)[0]


def other_video_streams(c: "av.container.InputContainer") -> int:
    """How many moving video streams the file holds besides :func:`main_video_stream`
    (a second camera, a picture-in-picture recording): they are not written."""
    return _choose(c)[1]


def rotation_of(frame: "av.VideoFrame") -> int:
    """Clockwise degrees to turn a decoded frame so that it is upright.

    FFmpeg reports the display matrix as a counter-clockwise angle (``-90`` for a phone
    video tagged ``rotate=90``); we normalise to 0/90/180/270 clockwise."""
    r = getattr(frame, "rotation", 0) or 0
    return int(round(-float(r) / 90.0)) * 90 % 360


def scan_stream(path: str | os.PathLike) -> StreamScan:
    """Demux (no decode) the video stream deid reads (:func:`main_video_stream`) and
    collect packet timestamps. Cached per file version (path, size, modification time):
    a probe, and the range and sparse reads after it, share one scan. Treat the arrays
    as read-only."""
    try:
        st = os.stat(path)
    except OSError:
        return _scan_stream(path)
    return _scan_cached(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _scan_cached(path: str, size: int, mtime_ns: int) -> StreamScan:
    sc = _scan_stream(path)
    for a in (sc.pts, sc.keyframes):
        a.flags.writeable = False
    return sc


def _scan_stream(path: str | os.PathLike) -> StreamScan:
    c = open_container(path)
    try:
        s = main_video_stream(c)
        pts, keys, dts_order = [], [], []
        # A capture that starts mid-GOP (an MPEG-TS recording cut anywhere) opens with
        # packets whose reference frames are not in the file: the decoder drops them, and
        # the leading pictures after the first keyframe that point back at them. They are
        # not frames of this video. (Without any keyframe flag, every packet counts.)
        lead: list[int] = []  # timestamps of the packets before the first keyframe
        key_pts: int | None = None
        try:
            for pkt in c.demux(s):
                if pkt.size == 0 and pkt.pts is None:
                    continue  # flush packet
                t = pkt.pts if pkt.pts is not None else pkt.dts
                if key_pts is None and not pkt.is_keyframe:
                    if t is not None and not pkt.is_discard:
                        lead.append(t)
                    continue
                if key_pts is None:
                    key_pts = t if t is not None else -(2**62)
                if pkt.is_discard:
                    continue  # before an MP4 edit list's start: decoded, never shown
                if t is None or (lead and t < key_pts):
                    continue
                pts.append(t)
                dts_order.append(t)
                if pkt.is_keyframe:
                    keys.append(t)
        except av.error.FFmpegError as e:
            raise VideoDecodeError(f"{path}: container is damaged after {len(pts)} packets ({e})", last_good_frame=len(pts) - 1) from None
        if key_pts is None:  # no keyframe flags at all: count what there is
            pts, dts_order = list(lead), list(lead)
        arr = np.asarray(dts_order, dtype=np.int64)
        out_of_order = bool(len(arr) > 1 and np.any(np.diff(arr) < 0))
        sorted_pts = np.sort(arr)
        dup = int(len(sorted_pts) - len(np.unique(sorted_pts)))
        return StreamScan(sorted_pts, Fraction(s.time_base), np.sort(np.asarray(keys, np.int64)), out_of_order, dup)
    finally:
        c.close()


def _is_vfr(pts: np.ndarray, time_base: Fraction) -> bool:
    if len(pts) < 3:
        return False
    d = np.diff(pts).astype(np.float64) * float(time_base)
    d = d[d > 0]
    if len(d) < 2:
        return False
    med = float(np.median(d))
    # More than one frame duration present (beyond rounding of the time base)
    tol = max(1.5 * float(time_base), 0.02 * med)
    if not np.mean(np.abs(d - med) > tol) > 0.01:
        return False
    # ...unless every frame stays within ~1 ms of one constant-rate grid: 30 fps written
    # on a millisecond clock (Matroska) steps 33, 33, 34 ms, and keeps doing so once
    # copied to a finer time base
    t = (pts - pts[0]).astype(np.float64) * float(time_base)
    step = t[-1] / (len(t) - 1)
    residual = np.abs(t - step * np.arange(len(t)))
    return bool(residual.max() > max(1.5 * float(time_base), 0.0011))


def probe(path: str | os.PathLike, *, scan: bool = True) -> VideoInfo:
    """Describe a video. Raises :class:`InvalidInputError` for anything that is not a
    decodable video (missing, empty, not a container, no video stream, first frame
    undecodable)."""
    p = check_readable(path)
    c = open_container(p)
    try:
        s = main_video_stream(c)
        others = other_video_streams(c)
        cc = s.codec_context
        has_audio = bool(c.streams.audio)
        rate = s.average_rate or s.guessed_rate or s.base_rate
        # decode the first frame: proves the stream decodes and gives rotation
        first = None
        try:
            for first in c.decode(s):
                break
        except av.error.FFmpegError as e:
            raise InvalidInputError(f"{p}: video stream cannot be decoded ({e.strerror or e})") from None
        if first is None:
            raise InvalidInputError(f"{p}: video stream has no decodable frames")
        rot = rotation_of(first)
        start_time = float(first.time) if first.time is not None else 0.0
        w, h = first.width, first.height
        pix_fmt = first.format.name
        codec = cc.name
        frames = int(s.frames or 0)
        time_base = str(s.time_base) if s.time_base else ""
        container_duration = float(c.duration) / av.time_base if c.duration else 0.0
    finally:
        c.close()

    is_vfr = False
    exact = frames > 0
    stream_duration = 0.0
    if scan:
        sc = scan_stream(p)
        if len(sc.pts):
            frames = len(sc.pts)
            exact = True
            is_vfr = _is_vfr(sc.pts, sc.time_base)
            start_time = float(sc.pts[0] * sc.time_base)
            span = float((sc.pts[-1] - sc.pts[0]) * sc.time_base)
            if not rate and len(sc.pts) > 1:
                rate = Fraction(len(sc.pts) - 1) / Fraction(span) if span > 0 else None
            # The video's own length: first to last frame plus the last frame's share.
            # A container's duration can count from time zero (a Matroska recording
            # that starts at 40 s says 42.4 s for 2.4 s of video) or include a longer
            # audio track. The last frame's share is one frame at the usual step
            # between frames, or at the declared rate where that is shorter: a sparse
            # VFR clip (frames at 0, 1, 60, 300 and 600 s) has a median step of minutes,
            # and lasts 600 s and a frame, not 750 s.
            step = float(np.median(np.diff(sc.pts))) * float(sc.time_base) if len(sc.pts) > 1 else 0.0
            if rate and (step <= 0 or 1.0 / float(rate) < step):
                step = 1.0 / float(rate)
            stream_duration = span + max(step, 0.0)
    fps = float(rate) if rate else 25.0
    if frames <= 0:
        frames = max(1, int(round(container_duration * fps)))
        exact = False
    duration = stream_duration or container_duration or frames / fps
    if rot in (90, 270):
        w, h = h, w
    return VideoInfo(
        path=str(p),
        width=int(w),
        height=int(h),
        fps=fps,
        frame_count=int(frames),
        duration=float(duration),
        rotation=rot,
        codec=codec,
        has_audio=has_audio,
        is_vfr=is_vfr,
        pix_fmt=pix_fmt,
        frame_count_exact=exact,
        time_base=time_base,
        start_time=start_time,
        other_video_streams=others,
    )
