"""Stitch segment files into one video by remuxing (packet copy, no re-encode).

Why a remux: an archive run renders a long video as several segments in parallel
(:mod:`deid.archive`), each with its own encoder. Re-encoding the joined frames would
cost as much as the rendering itself and lose quality a second time; copying the
compressed packets costs a few milliseconds per second of video.

What makes a plain packet copy correct here:

- every segment starts with an IDR frame (a fresh encoder always opens with one), so
  the decoder needs nothing from the previous segment;
- every segment was encoded with the same settings, size and time base, so one set of
  parameter sets (SPS/PPS, the stream's *extradata*) describes all of them — this is
  checked, and a mismatch is an error rather than a silently broken file;
- segments already carry absolute timestamps (``VideoWriter(pts_origin=...)``), so
  packets are copied with their timestamps unchanged and the joined video has the
  same frame timestamps as a whole-video run.

Decode timestamps need care. With B-frames x264 delays decoding: a segment's first
packets have a dts *before* their pts (e.g. two frame durations). At a junction the
next segment's first dts can therefore fall at or before the previous segment's last
dts when the delays differ; muxers reject that. Each packet's dts is raised to one
tick above the previous one when needed, which keeps dts strictly increasing and never
above the packet's pts (checked; an error otherwise). Presentation timestamps are never
changed.

Nothing identifying is added: no container or stream tags (``fflags=+bitexact``), and
audio only when asked for (copied from the source, as :class:`deid.io.VideoWriter` does).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av

from ..errors import InvalidInputError, VideoEncodeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConcatStats:
    """What :func:`concat_segments` wrote."""

    frames: int  # video packets (= frames) written
    segments: int
    first_pts: int | None
    last_pts: int | None
    time_base: Fraction
    dts_adjusted: int  # packets whose dts had to be raised to stay strictly increasing
    audio_packets: int = 0
    junctions_nudged: int = 0  # segments moved a tick or two later past a repeated timestamp


def _open(path: str | os.PathLike) -> "av.container.InputContainer":
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        raise InvalidInputError(f"segment {p} is missing or empty; render it again")
    try:
        c = av.open(str(p), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise InvalidInputError(f"segment {p} cannot be opened ({e}); render it again") from None
    if not c.streams.video:
        c.close()
        raise InvalidInputError(f"segment {p} has no video stream; render it again")
    return c


def _params(s: "av.video.stream.VideoStream") -> tuple:
    cc = s.codec_context
    return (cc.name, cc.width, cc.height, cc.pix_fmt, Fraction(s.time_base), bytes(cc.extradata or b""))


def audio_source(src: str | os.PathLike, offset_s: float = 0.0):
    """(container, stream, packet iterator) for the first audio stream of ``src``, or None.

    The video written beside it starts at 0 while the source's first video frame may
    start later (``VideoInfo.start_time``, e.g. after an edit list or a trimmed copy);
    packets are moved back by ``offset_s`` seconds so sound stays in step with the
    picture, and the ones that would then start before 0 are dropped."""
    try:
        ic = av.open(str(src), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise VideoEncodeError(f"{src}: cannot read audio ({e})") from None
    if not ic.streams.audio:
        ic.close()
        return None
    a = ic.streams.audio[0]
    if len(ic.streams.audio) > 1:
        log.warning("%s: %d audio streams; io.keep_audio keeps the first only", src, len(ic.streams.audio))
    shift = int(round(offset_s / float(a.time_base))) if offset_s and a.time_base else 0

    def packets():
        for p in ic.demux(a):
            if p.dts is None or p.size == 0:
                continue
            if shift:
                if p.pts is not None and p.pts - shift < 0:
                    continue
                p.dts -= shift
                if p.pts is not None:
                    p.pts -= shift
            yield p

    return ic, a, packets()


#: most ticks a segment is moved later to clear a repeated timestamp at its junction
JUNCTION_NUDGE = 3


def concat_segments(
    segments: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    audio_from: str | os.PathLike | None = None,
    audio_offset: float = 0.0,
    container_format: str | None = None,
) -> ConcatStats:
    """Join ``segments`` (in order) into ``out`` without re-encoding.

    ``out`` is normally a temporary from :func:`deid.io.atomic_output`. ``audio_from``
    copies that file's first audio stream (the input video's, when audio is kept),
    moved back by ``audio_offset`` seconds (the input's first frame time).
    Raises :class:`InvalidInputError` for a missing/unreadable segment and
    :class:`VideoEncodeError` when the segments cannot be joined (different encoder
    parameters, overlapping or unordered timestamps)."""
    if not segments:
        raise InvalidInputError(f"{out}: no segments to join")
    out = str(out)
    fmt = container_format or ("matroska" if out.endswith(".mkv") else "mp4")
    first = _open(segments[0])
    try:
        ref = _params(first.streams.video[0])
        from .encode import _mux_options

        try:
            oc = av.open(out, mode="w", format=fmt, options=_mux_options(fmt, ref[4], 25.0))
        except av.error.FFmpegError as e:
            raise VideoEncodeError(f"{out}: cannot create output ({e})") from None
        oc.metadata.clear()
        vs = oc.add_stream_from_template(first.streams.video[0])
        vs.time_base = first.streams.video[0].time_base
        vs.metadata.clear()
    finally:
        first.close()

    audio = None
    a_out = None
    if audio_from is not None:
        audio = audio_source(audio_from, audio_offset)
        if audio is not None:
            try:
                a_out = oc.add_stream_from_template(audio[1])
            except Exception as e:  # noqa: BLE001 - PyAV raises several kinds here
                audio[0].close()
                oc.close()
                raise VideoEncodeError(f"{audio_from}: audio cannot be copied into {out} ({e})") from None
            a_out.metadata.clear()
    pending_audio = None
    n_audio = 0

    def mux_audio_until(t_seconds: float | None) -> None:
        """Interleave: write source audio packets up to ``t_seconds`` (all when None)."""
        nonlocal pending_audio, n_audio
        if audio is None:
            return
        ic, a_in, it = audio
        while True:
            if pending_audio is None:
                pending_audio = next(it, None)
                if pending_audio is None:
                    return
            t = float(pending_audio.dts * a_in.time_base)
            if t_seconds is not None and t > t_seconds:
                return
            pending_audio.stream = a_out
            oc.mux(pending_audio)
            n_audio += 1
            pending_audio = None

    n = 0
    last_dts: int | None = None
    prev_max_pts: int | None = None
    first_pts: int | None = None
    last_pts: int | None = None
    adjusted = 0
    nudged = 0
    tb = ref[4]
    ok = False
    try:
        for k, seg in enumerate(segments):
            c = _open(seg)
            try:
                s = c.streams.video[0]
                got = _params(s)
                if got != ref:
                    what = ("codec", "width", "height", "pixel format", "time base", "parameter sets (extradata)")
                    diff = [w for w, a, b in zip(what, ref, got) if a != b]
                    raise VideoEncodeError(
                        f"segment {seg} was encoded with different {', '.join(diff)} than {segments[0]}; "
                        "segments of one video must share encoder settings (render them with one config)"
                    )
                seg_min_pts: int | None = None
                seg_max_pts: int | None = None
                shift = 0
                for pkt in c.demux(s):
                    if pkt.size == 0:
                        continue  # flush packet
                    if pkt.pts is None or pkt.dts is None:
                        raise VideoEncodeError(f"segment {seg}: packet without timestamps; render it again")
                    if seg_min_pts is None and prev_max_pts is not None and 0 <= prev_max_pts - int(pkt.pts) < JUNCTION_NUDGE:
                        # An input with a repeated timestamp exactly at this segment's first
                        # frame (a segment opens on its IDR frame, the first it shows): the
                        # whole-video writer moves the repeat one tick later; move this
                        # segment the tick (or the few) later too. A real overlap (more than
                        # JUNCTION_NUDGE ticks) is still an error below.
                        shift = prev_max_pts - int(pkt.pts) + 1
                        nudged += 1
                    if shift:
                        pkt.pts, pkt.dts = int(pkt.pts) + shift, int(pkt.dts) + shift
                    pts, dts = int(pkt.pts), int(pkt.dts)
                    if seg_min_pts is None or pts < seg_min_pts:
                        seg_min_pts = pts
                    seg_max_pts = pts if seg_max_pts is None else max(seg_max_pts, pts)
                    if prev_max_pts is not None and pts <= prev_max_pts:
                        raise VideoEncodeError(
                            f"segment {seg} (#{k}) has a frame at pts {pts}, not after the previous segment's last "
                            f"frame (pts {prev_max_pts}); segments overlap or are out of order"
                        )
                    if last_dts is not None and dts <= last_dts:
                        dts = last_dts + 1
                        if dts > pts:
                            raise VideoEncodeError(
                                f"segment {seg} (#{k}): cannot keep decode timestamps increasing at pts {pts} "
                                f"(time base {tb} too coarse for this B-frame delay); use io.timing=keep or "
                                "fewer, longer segments"
                            )
                        pkt.dts = dts
                        adjusted += 1
                    last_dts = dts
                    mux_audio_until(float(dts * tb))
                    pkt.stream = vs
                    oc.mux(pkt)
                    n += 1
                if seg_min_pts is None:
                    raise InvalidInputError(f"segment {seg} holds no frames; render it again")
                if first_pts is None:
                    first_pts = seg_min_pts
                last_pts = seg_max_pts
                prev_max_pts = seg_max_pts
            finally:
                c.close()
        mux_audio_until(None)
        ok = True
    except av.error.FFmpegError as e:
        raise VideoEncodeError(f"{out}: muxing failed after {n} packets ({e})") from None
    finally:
        if audio is not None:
            audio[0].close()
        try:
            oc.close()
        except Exception:  # noqa: BLE001 - closing a failed output; the caller deletes it
            if ok:
                raise
    if adjusted:
        log.debug("%s: raised the dts of %d packet(s) at segment junctions", out, adjusted)
    return ConcatStats(n, len(segments), first_pts, last_pts, tb, adjusted, n_audio, nudged)


__all__ = ["ConcatStats", "concat_segments"]
