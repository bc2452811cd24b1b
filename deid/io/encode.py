"""Encode with PyAV / libx264: yuv420p, even dimensions, no metadata, atomic.

What an output carries, by default:
- one H.264 video stream, yuv420p, CRF/preset from config;
- no audio stream (``keep_audio=True`` copies the input's first audio stream);
- no container or stream tags: no creation time, location, device or encoder tag
  (``fflags=+bitexact``), and x264's settings banner (an SEI NAL unit) is filtered out;
- the input's frame count; timestamps either the input's (``timing="keep"``, so VFR
  stays VFR) or regularised to the average rate, frames / duration (``timing="cfr"``,
  :func:`cfr_rate`: the output lasts as long as the input).

Odd widths/heights (which yuv420p cannot hold) are padded by one replicated pixel on
the right/bottom, so pixel coordinates are unchanged.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction

import av
import numpy as np

from ..errors import VideoEncodeError, storage_error

log = logging.getLogger(__name__)

#: audio codecs players expect in an MP4 (others, e.g. PCM from a .mov or .avi, are copied with a warning)
_MP4_AUDIO = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"})

#: container tags that must never appear in an output (checked by tests)
SENSITIVE_TAGS = ("creation_time", "location", "location-eng", "com.apple.quicktime.location.iso6709",
                  "encoder", "com.apple.quicktime.make", "com.apple.quicktime.model", "make", "model",
                  "date", "title", "comment", "artist")


def even_size(width: int, height: int) -> tuple[int, int]:
    return width + (width & 1), height + (height & 1)


def pad_even(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if not (h & 1 or w & 1):
        return img
    return np.pad(img, ((0, h & 1), (0, w & 1), (0, 0)), mode="edge")


def _rate_fraction(fps: float) -> Fraction:
    # common NTSC-style rates are exact fractions
    for num, den in ((24000, 1001), (30000, 1001), (60000, 1001)):
        if abs(fps - num / den) < 1e-3:
            return Fraction(num, den)
    return Fraction(fps).limit_denominator(1001)


def cfr_rate(info) -> float:
    """The rate ``io.timing=cfr`` spaces frames at: the video's average rate, frames /
    duration (duration = first to last frame plus one frame, :func:`deid.io.probe`), so
    the output lasts as long as the input. The declared rate (``info.fps``) where it is
    within 1% of that: a constant-rate video keeps its exact rate (30000/1001 stays so).
    A sparse VFR clip (5 frames over 600 s, declared 25 fps) is written at 5 / 600 fps,
    not squeezed into 0.2 s at 25."""
    if not (info.frame_count_exact and info.duration > 0 and info.frame_count > 0):
        return info.fps
    avg = info.frame_count / info.duration
    return info.fps if abs(avg - info.fps) <= 0.01 * info.fps else avg


def _mux_options(fmt: str, time_base: Fraction | None, fps: float) -> dict[str, str]:
    """Muxer options: no identifying tags (``+bitexact``); for MP4 a movie timescale equal
    to the stream's, so an edit list that starts the video at a non-zero timestamp (a
    segment of a longer video, an input whose first frame is not at 0) is exact. With
    MP4's default of 1000 the start was rounded down to the millisecond, shifting every
    frame of a segment by up to a millisecond."""
    opts = {"fflags": "+bitexact"}
    if fmt == "mp4":
        tb = Fraction(time_base) if time_base else 1 / _rate_fraction(float(fps))
        if tb.numerator == 1 and 0 < tb.denominator < 2**31:
            opts["movie_timescale"] = str(tb.denominator)
    return opts


class VideoWriter:
    """Write RGB frames to ``path`` (normally a temporary from :func:`atomic_output`).

    ``write(frame, pts)`` takes the input's timestamp in ``time_base`` units when
    ``timing="keep"``; with ``timing="cfr"`` (or ``pts=None``) frames are spaced at ``fps``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        width: int,
        height: int,
        fps: float,
        *,
        crf: int = 20,
        preset: str = "veryfast",
        timing: str = "keep",
        time_base: Fraction | None = None,
        audio_from: str | os.PathLike | None = None,
        audio_offset: float = 0.0,
        container_format: str | None = None,
        pts_origin: int | None = None,
        index_origin: int = 0,
        label: str | None = None,
    ):
        self.path = str(path)
        #: what errors call this output (default: its path; the pipeline writes to a hidden
        #: temporary and names the input and method instead)
        self.label = label or self.path
        self.size = (int(width), int(height))
        self.enc_w, self.enc_h = even_size(int(width), int(height))
        self.rate = _rate_fraction(float(fps))
        self.timing = timing
        self.frames_written = 0
        self._last_pts: int | None = None
        # Timestamps are written relative to ``pts_origin`` (default: the first frame's pts)
        # and, for CFR, frame numbers start at ``index_origin``. A segment of a longer video
        # passes the video's origin so segments concatenate without retiming.
        self._first_in_pts: int | None = pts_origin
        self._index_origin = int(index_origin)
        fmt = container_format or ("matroska" if self.path.endswith(".mkv") else "mp4")
        try:
            self._out = av.open(self.path, mode="w", format=fmt, options=_mux_options(fmt, time_base if timing == "keep" else None, fps))
        except av.error.FFmpegError as e:
            raise VideoEncodeError(f"{self.label}: cannot create output ({e})") from None
        self._out.metadata.clear()
        s = self._out.add_stream("libx264", rate=self.rate)
        s.width, s.height = self.enc_w, self.enc_h
        s.pix_fmt = "yuv420p"
        s.options = {"crf": str(int(crf)), "preset": preset}
        if timing == "keep" and time_base:
            self.time_base = Fraction(time_base)
        else:
            self.time_base = 1 / self.rate
        s.time_base = self.time_base
        s.codec_context.time_base = self.time_base
        s.metadata.clear()
        self._v = s
        # The SEI filter is created at the first packet, once the encoder is open: its
        # parameters (size, extradata) are copied from the stream at creation time.
        self._bsf = None
        self._bsf_ready = False
        self._audio_in = None
        self._a = None
        if audio_from is not None:
            self._open_audio(audio_from, audio_offset)

    # ------------------------------------------------------------------ audio
    def _open_audio(self, src: str | os.PathLike, offset_s: float) -> None:
        from .concat import audio_source

        got = audio_source(src, offset_s)
        if got is None:
            return
        ic, a_in, packets = got
        try:
            self._a = self._out.add_stream_from_template(a_in)
        except Exception as e:
            ic.close()
            raise VideoEncodeError(f"{src}: audio codec {a_in.codec_context.name} cannot be copied into {self.label} ({e})") from None
        self._a.metadata.clear()
        codec = a_in.codec_context.name
        if self._out.format.name.startswith("mp4") and codec not in _MP4_AUDIO:
            log.warning("%s: its %s audio is copied into an MP4, which many players do not play; set io.container=mkv "
                        "to keep it in a container made for it", src, codec)
        self._audio_in = ic
        self._audio_packets = packets

    def _copy_audio(self) -> None:
        ic, a_out = self._audio_in, self._a
        if ic is None or a_out is None:
            return
        try:
            for pkt in self._audio_packets:
                pkt.stream = a_out
                self._out.mux(pkt)
        finally:
            ic.close()
            self._audio_in = None

    # ------------------------------------------------------------------ video
    def _filter(self):
        if not self._bsf_ready:
            self._bsf_ready = True
            self._out.start_encoding()  # header written with the opened encoder's parameters
            try:
                self._bsf = av.bitstream.BitStreamFilterContext("filter_units=remove_types=6", self._v, self._v)
            except Exception:  # pragma: no cover - filter missing from an FFmpeg build
                self._bsf = None
                log.warning("filter_units bitstream filter unavailable; x264 SEI banner stays in the stream")
        return self._bsf

    def _mux(self, packets) -> None:
        for p in packets:
            bsf = self._filter()
            outs = bsf.filter(p) if bsf is not None else [p]
            for q in outs:
                q.stream = self._v
                self._out.mux(q)

    def write(self, frame: np.ndarray, pts: int | None = None) -> None:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise VideoEncodeError(f"{self.label}: frame {self.frames_written} must be RGB uint8, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        if (w, h) != self.size:
            raise VideoEncodeError(f"{self.label}: frame {self.frames_written} is {w}x{h}, expected {self.size[0]}x{self.size[1]}")
        vf = av.VideoFrame.from_ndarray(pad_even(np.ascontiguousarray(frame)), format="rgb24")
        if self.timing == "keep" and pts is not None:
            if self._first_in_pts is None:
                self._first_in_pts = int(pts)
            out_pts = int(pts) - self._first_in_pts
            if self._last_pts is not None and out_pts <= self._last_pts:
                out_pts = self._last_pts + 1  # never emit non-increasing timestamps
        else:
            out_pts = self._index_origin + self.frames_written
        vf.pts = out_pts
        vf.time_base = self.time_base
        self._last_pts = out_pts
        try:
            self._mux(self._v.encode(vf))
        except av.error.FFmpegError as e:
            raise self._error(e, f"encoder failed at frame {self.frames_written}") from None
        self.frames_written += 1

    def _error(self, e: Exception, what: str) -> Exception:
        """A full, read-only or over-quota disk as such (naming the output, not the
        hidden temporary FFmpeg was writing); anything else as an encoder error."""
        where = os.path.dirname(self.path) or "."  # the folder (its disk), not the hidden temporary's name
        return storage_error(e, f"{self.label}: cannot write to {where}") or VideoEncodeError(f"{self.label}: {what} ({e})")

    def close(self) -> None:
        if self._out is None:
            return
        try:
            try:
                self._mux(self._v.encode(None))
                if self._bsf is not None:
                    for q in self._bsf.filter(None):
                        q.stream = self._v
                        self._out.mux(q)
                self._copy_audio()
            finally:
                out, self._out = self._out, None
                out.close()
        except av.error.FFmpegError as e:
            raise self._error(e, "cannot finish the output") from None

    def abort(self) -> None:
        """Close without caring about errors (the caller deletes the temporary)."""
        if self._audio_in is not None:
            self._audio_in.close()
            self._audio_in = None
        if self._out is not None:
            try:
                self._out.close()
            except Exception:
                pass
            self._out = None

    @classmethod
    def like(cls, path: str | os.PathLike, info, io, **kw) -> "VideoWriter":
        """A writer for a de-identified copy of the video ``info`` describes (a
        :class:`~deid.io.VideoInfo`): its size, frame rate and time base, with the encoder
        settings of ``io`` (an :class:`~deid.config.IOConfig`: crf, preset, timing); ``kw``
        as for the constructor (audio, container, segment origins)."""
        fps = cfr_rate(info) if io.timing == "cfr" else info.fps
        return cls(path, info.width, info.height, fps, crf=io.crf, preset=io.preset, timing=io.timing,
                   time_base=Fraction(info.time_base) if info.time_base else None, **kw)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def container_tags(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """All metadata tags of a file: ``{"format": {...}, "stream0": {...}, ...}`` (for audits/tests)."""
    with av.open(str(path), metadata_errors="ignore") as c:
        out = {"format": dict(c.metadata)}
        for i, s in enumerate(c.streams):
            out[f"stream{i}:{s.type}"] = dict(s.metadata)
    return out


def has_sensitive_tags(path: str | os.PathLike) -> list[str]:
    """Names of identifying tags present in ``path`` (should be empty for our outputs)."""
    found = []
    for where, tags in container_tags(path).items():
        for k, v in tags.items():
            if k.lower() == "encoder" and v == "Lavf":
                continue  # Matroska's mandatory MuxingApp element, version-free under bitexact
            if k.lower() in SENSITIVE_TAGS or "location" in k.lower() or "gps" in k.lower():
                found.append(f"{where}.{k}")
    return found

