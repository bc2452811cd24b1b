"""Streaming decode: frames arrive in bounded chunks, upright, RGB uint8.

Never holds a whole video. Rotation metadata is applied so every frame is upright.
A stream that breaks mid-way raises :class:`VideoDecodeError` naming the last good
frame (or, with ``on_corrupt="keep_partial"``, stops there and marks the read partial).
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Container, Iterator

import av
import numpy as np

from ..errors import VideoDecodeError
from ..types import VideoInfo
from .probe import main_video_stream, open_container, probe, rotation_of, scan_stream

log = logging.getLogger(__name__)


def upright(img: np.ndarray, rotation: int) -> np.ndarray:
    """Turn an image ``rotation`` degrees clockwise."""
    if rotation == 0:
        return img
    k = {90: -1, 180: 2, 270: 1}[rotation]
    return np.ascontiguousarray(np.rot90(img, k=k))


@dataclass
class FrameBatch:
    """A run of consecutive frames: ``frames[i]`` is frame number ``start + i``."""

    start: int
    frames: list[np.ndarray]
    pts: list[int | None]  # presentation timestamps in ``time_base`` units
    time_base: Fraction

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def stop(self) -> int:
        return self.start + len(self.frames)

    def indices(self) -> range:
        return range(self.start, self.stop)


@dataclass
class ReadStats:
    frames_read: int = 0
    partial: bool = False
    error: str = ""
    expected: int = 0
    notes: list[str] = field(default_factory=list)
    #: frames whose size differed from the first frame's (the stream changed resolution
    #: mid-way, as adaptive-bitrate recordings do) and were scaled to it, as runs of
    #: frame numbers ``[a, b)``, so a segment can count its own frames
    rescaled_runs: list[list[int]] = field(default_factory=list)

    @property
    def rescaled(self) -> int:
        """How many frames were scaled."""
        return sum(b - a for a, b in self.rescaled_runs)

    def rescaled_in(self, start: int, stop: int) -> int:
        """How many of the frames ``[start, stop)`` were scaled."""
        return sum(max(0, min(b, stop) - max(a, start)) for a, b in self.rescaled_runs)


def batch_frames(chunk_size: int, width: int, height: int, batch_mb: float | None) -> int:
    """Frames per batch: ``chunk_size``, or fewer (at least 1) so that a batch of decoded
    RGB frames of ``width`` x ``height`` stays within ``batch_mb`` megabytes (None: no
    bound). Memory then follows the frame count at low resolution and the byte bound at
    high resolution: with the default 32 frames / 64 MB, 1080p batches hold 10 frames and
    4K batches 2."""
    if batch_mb is None:
        return int(chunk_size)
    per = max(1, int(width) * int(height) * 3)
    return max(1, min(int(chunk_size), int(float(batch_mb) * (1 << 20)) // per))


class VideoReader:
    """Iterate a video (or the frame range ``[start, stop)``) in chunks.

    >>> for batch in VideoReader("clip.mp4", chunk_size=32):
    ...     process(batch.start, batch.frames)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        chunk_size: int = 32,
        info: VideoInfo | None = None,
        on_corrupt: str = "fail",
        start: int = 0,
        stop: int | None = None,
        decoder: str = "pyav",
        batch_mb: float | None = 64.0,
        select: Container[int] | None = None,
    ):
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if on_corrupt not in ("fail", "keep_partial"):
            raise ValueError("on_corrupt must be 'fail' or 'keep_partial'")
        self.path = str(path)
        self.info = info or probe(path)
        #: frames per batch: ``chunk_size``, fewer when that many frames would exceed
        #: ``batch_mb`` megabytes (see :func:`batch_frames`)
        self.chunk_size = batch_frames(chunk_size, self.info.width, self.info.height, batch_mb)
        self.on_corrupt = on_corrupt
        self.start = max(0, int(start))
        self.stop = self.info.frame_count if stop is None else min(int(stop), self.info.frame_count)
        self.decoder = decoder
        #: frame numbers to convert to pixels (None: all); the others are decoded (the
        #: stream needs them) but come back as None, which saves the colour conversion
        #: in sparse reads (:func:`read_frames`). PyAV decoder only.
        self.select = select
        self.stats = ReadStats(expected=max(0, self.stop - self.start))

    def __iter__(self) -> Iterator[FrameBatch]:
        if self.decoder == "decord":
            yield from self._iter_decord()
        else:
            yield from self._iter_pyav()

    # -------------------------------------------------------------------- PyAV
    def _iter_pyav(self) -> Iterator[FrameBatch]:
        c = open_container(self.path)
        try:
            s = main_video_stream(c)
            # no frame threading: FFmpeg frame threads can deadlock on a corrupt stream
            # (seen on video/bad/corrupted.mp4); decode is not the bottleneck anyway
            tb = Fraction(s.time_base) if s.time_base else Fraction(1, 1)
            index_of_pts = None
            first_pts = None
            frames_iter = None
            if self.start > 0:
                sc = scan_stream(self.path)
                index_of_pts = sc.pts
                first_pts = int(sc.pts[self.start])
                c, s, frames_iter = self._decode_from(c, s, sc.keyframes, first_pts)
            elif self.info.start_time:
                # frames before the video's first counted one (leading pictures of a
                # capture cut mid-GOP that a decoder conceals instead of dropping)
                first_pts = self.info.start_pts
            idx = self.start
            buf: list[np.ndarray] = []
            pts: list[int | None] = []
            buf_start = idx
            if frames_iter is None:
                frames_iter = c.decode(s)
            while idx < self.stop:
                try:
                    frame = next(frames_iter)
                except StopIteration:
                    break
                except (av.error.FFmpegError, ValueError) as e:
                    self._corrupt(idx, f"decoder error ({getattr(e, 'strerror', None) or e})")
                    break
                if first_pts is not None and frame.pts is not None and frame.pts < first_pts:
                    continue  # decoding up from the keyframe before the segment
                if index_of_pts is not None and frame.pts is not None:
                    # anchor on the timestamp: a frame past the one expected means the
                    # frames between are not in the stream (never skipped silently)
                    j = int(np.searchsorted(index_of_pts, frame.pts))
                    if j > idx and j < len(index_of_pts) and index_of_pts[j] == frame.pts:
                        gap = f"frames {idx}..{min(j, self.stop) - 1} missing from the stream"
                        if buf:
                            self.stats.frames_read += len(buf)
                            yield FrameBatch(buf_start, buf, pts, tb)
                            buf, pts, buf_start = [], [], idx
                        self._corrupt(idx, gap)
                        break
                if self.select is None or idx in self.select:
                    buf.append(self._to_size(upright(frame.to_ndarray(format="rgb24"), rotation_of(frame)), idx))
                else:
                    buf.append(None)
                pts.append(frame.pts)
                idx += 1
                if len(buf) >= self.chunk_size:
                    self.stats.frames_read += len(buf)
                    yield FrameBatch(buf_start, buf, pts, tb)
                    buf, pts, buf_start = [], [], idx
            if buf:
                self.stats.frames_read += len(buf)
                yield FrameBatch(buf_start, buf, pts, tb)
            # every frame came out in order at its own index (a gap stopped the read
            # above), so frames [idx, stop) are the ones missing from the range
            got = self.stats.frames_read
            if idx < self.stop and not self.stats.partial:
                self._corrupt(
                    idx,
                    f"stream ended early: {got} of {self.stats.expected} frames decodable",
                )
        finally:
            c.close()

    def _to_size(self, img: np.ndarray, idx: int) -> np.ndarray:
        """A frame at the video's size (the first frame's, :attr:`info`): a stream that
        changes resolution mid-way is scaled back to it, so that every frame can be
        analysed and encoded alike; counted in :attr:`stats` ``.rescaled_runs``."""
        w, h = self.info.width, self.info.height
        if img.shape[0] == h and img.shape[1] == w:
            return img
        import cv2

        runs = self.stats.rescaled_runs
        if not runs:
            note = f"frame {idx} is {img.shape[1]}x{img.shape[0]}, the video {w}x{h}: such frames are scaled to {w}x{h}"
            self.stats.notes.append(note)
            log.warning("%s: %s", self.path, note)
        if runs and runs[-1][1] == idx:
            runs[-1][1] = idx + 1
        else:
            runs.append([idx, idx + 1])
        shrink = img.shape[0] * img.shape[1] > w * h
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def _decode_from(self, c, s, keyframes: np.ndarray, target: int):
        """Decode ``s`` from a keyframe at or before the timestamp ``target``.

        A seek lands on a keyframe, but not always the one asked for: an MPEG-TS file has
        no index, and FFmpeg's search there often lands a GOP late (the frames before the
        next keyframe would be lost). Seek to the last keyframe at or before ``target``;
        when the first frame decoded is past it, try the keyframes before, and at last
        decode from the start of the stream. Returns ``(container, stream, frames)``.
        """
        k = int(np.searchsorted(keyframes, target, side="right")) - 1
        if k >= 0:
            bound = int(keyframes[k])  # decoding started at or before it iff its first frame is
            for key in keyframes[max(0, k - 2) : k + 1][::-1]:
                try:
                    c.seek(int(key), stream=s, backward=True, any_frame=False)
                    frames = c.decode(s)
                    first = next(frames)
                except (StopIteration, av.error.FFmpegError, ValueError):
                    continue
                if first.pts is None or first.pts <= bound:
                    return c, s, itertools.chain([first], frames)
                log.debug("%s: seek to %d started decoding at %d, past %d", self.path, key, first.pts, bound)
        # from the start: a fresh demuxer and decoder, as for a whole read
        fresh = open_container(self.path)
        c.close()
        s = main_video_stream(fresh)
        return fresh, s, fresh.decode(s)

    def _corrupt(self, idx: int, what: str) -> None:
        last_good = idx - 1
        msg = f"{self.path}: {what}; last good frame is {last_good}" if last_good >= 0 else f"{self.path}: {what}; no frame decodable"
        if self.on_corrupt == "keep_partial" and last_good >= self.start:
            self.stats.partial = True
            self.stats.error = msg
            log.warning("%s (keeping the %d decodable frames, marked partial)", msg, last_good - self.start + 1)
            return
        raise VideoDecodeError(msg, last_good_frame=last_good)

    # -------------------------------------------------------------------- decord
    def _iter_decord(self) -> Iterator[FrameBatch]:
        c = open_container(self.path)
        several = len(c.streams.video) > 1
        c.close()
        if several:  # decord reads FFmpeg's pick of stream, which can be a still picture
            log.info("%s: several video streams; decoded with PyAV, which reads the chosen one", self.path)
            yield from self._iter_pyav()
            return
        try:
            import decord
        except ImportError as e:  # pragma: no cover - decord is in the pin set
            raise VideoDecodeError(f"decord is not installed: {e}") from None
        try:
            vr = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=1)
        except Exception as e:  # decord raises bare DECORDError
            raise VideoDecodeError(f"{self.path}: decord cannot open the stream ({e})") from None
        n = min(self.stop, len(vr))
        # decord indexes frames in presentation order, like the demuxer's sorted packet
        # timestamps: those are the frames' timestamps in the stream's own time base (what
        # the writer keeps with io.timing=keep). Its frames come out already upright.
        sc = scan_stream(self.path)
        tb = sc.time_base
        for a in range(self.start, n, self.chunk_size):
            b = min(n, a + self.chunk_size)
            try:
                arr = vr.get_batch(list(range(a, b))).asnumpy()
            except Exception as e:
                self._corrupt(a, f"decord error ({e})")
                return
            frames = list(arr)
            self.stats.frames_read += len(frames)
            yield FrameBatch(a, frames, [int(p) for p in sc.pts[a:b]] if len(sc.pts) >= b else [None] * len(frames), tb)
        if self.stats.frames_read < self.stats.expected and not self.stats.partial:
            self._corrupt(self.start + self.stats.frames_read, f"stream ended early: {self.stats.frames_read} of {self.stats.expected} frames decodable")


def iter_frames(path: str | os.PathLike, **kw) -> Iterator[tuple[int, np.ndarray]]:
    """Frame-by-frame convenience wrapper: yields ``(index, frame)``."""
    for batch in VideoReader(path, **kw):
        for i, f in zip(batch.indices(), batch.frames):
            yield i, f


def read_frames(path: str | os.PathLike, indices: list[int] | None = None, **kw) -> list[np.ndarray]:
    """Read some frames (all when ``indices`` is None) into memory, in the order of
    ``indices`` (repeats kept; numbers past the end left out). For tests and small samples
    only — pipelines stream with :class:`VideoReader`.

    A few frames spread over a long video (the leak audit's samples) are read by seeking:
    each run of wanted frames is decoded from the keyframe before it (:func:`sparse_spans`)
    instead of decoding the whole video up to the last one. The frames are the same
    (range reads anchor on timestamps, as segmented runs do); should a range read fail,
    the frames are read from the start as before."""
    if indices is not None and not len(indices):
        return []
    want = None if indices is None else {int(i) for i in indices}
    out: dict[int, np.ndarray] = {}
    ranged = any(k in kw for k in ("start", "stop", "select"))
    spans = sparse_spans(path, want) if want is not None and kw.get("decoder", "pyav") == "pyav" and not ranged else None
    if spans is not None:
        info = kw.pop("info", None) or probe(path)  # once, not once a range
        try:
            for a, b in spans:
                for i, f in iter_frames(path, start=a, stop=b, select=want, info=info, **kw):
                    if i in want:
                        out[i] = f
        except VideoDecodeError as e:
            log.debug("%s: sparse read failed (%s); reading from the start", path, e)
            out, spans = {}, None
            kw["info"] = info
    if spans is None:
        stop = None if want is None else max(want) + 1
        # the frames between are decoded, not converted (PyAV; decord converts what it reads)
        for i, f in iter_frames(path, stop=stop, select=want, **kw):
            if want is None or i in want:
                out[i] = f
    order = sorted(out) if indices is None else [int(i) for i in indices if int(i) in out]
    return [out[i] for i in order]


#: a sparse read seeks only when that decodes at most this share of the frames a read
#: from the start would
SPARSE_SHARE = 0.6


def sparse_spans(path: str | os.PathLike, want: Container[int] | None) -> list[tuple[int, int]] | None:
    """Frame ranges ``[a, b)`` that cover ``want`` when reading them by seeking pays: a
    wanted frame starts a new range when the keyframe before it lies past the end of the
    current range (decoding on to it would cost more than seeking), and the ranges'
    decoding (from each one's keyframe) must come to at most :data:`SPARSE_SHARE` of
    decoding from the start. None: read from the start (few keyframes, dense samples, a
    file the scan cannot index)."""
    if not want:
        return None
    try:
        sc = scan_stream(path)
    except (VideoDecodeError, av.error.FFmpegError, OSError):
        return None
    n = len(sc.pts)
    idx = sorted(i for i in want if 0 <= i < n)
    if len(idx) < 2 or len(sc.keyframes) < 2:
        return None
    # frame number of the keyframe at or before each wanted frame
    k = np.searchsorted(sc.keyframes, sc.pts[idx], side="right") - 1
    key_idx = np.where(k >= 0, np.searchsorted(sc.pts, sc.keyframes[np.maximum(k, 0)]), 0)
    spans: list[list[int]] = []  # [first wanted, last wanted + 1, keyframe decoding starts at]
    for i, key in zip(idx, key_idx.tolist()):
        if spans and key <= spans[-1][1]:
            spans[-1][1] = i + 1  # its keyframe is behind us: decode on
        else:
            spans.append([i, i + 1, key])
    cost = sum(b - key for _, b, key in spans)
    if len(spans) < 2 or cost > SPARSE_SHARE * (idx[-1] + 1):
        return None
    return [(a, b) for a, b, _ in spans]
