"""Synthetic long videos: one clip looped to N minutes by packet copy (no re-encode).

Time should grow linearly with video length and peak memory should not grow at all
(the pipeline streams with a bounded lookahead). Looping the compressed packets makes a
20-minute test video in about a second, with every loop bit-identical, so the runs
differ only in length. Each loop starts with the clip's first (IDR) frame; timestamps
are shifted by one clip duration per loop, so they stay strictly increasing.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np


def loops_for(minutes: float, clip_seconds: float) -> int:
    """Whole loops of a ``clip_seconds`` clip needed to last at least ``minutes``."""
    if clip_seconds <= 0:
        raise ValueError("clip_seconds must be > 0")
    return max(1, math.ceil(minutes * 60.0 / clip_seconds - 1e-9))


def loop_clip(src: str | os.PathLike, dst: str | os.PathLike, minutes: float) -> dict:
    """Write ``dst``: the video stream of ``src`` repeated to last at least ``minutes``
    (no audio). Returns ``{"loops", "frames", "seconds"}``. Reuses an existing ``dst``."""
    import av

    dst = Path(dst)
    with av.open(str(src)) as inp:
        vs = inp.streams.video[0]
        tb = vs.time_base
        pkts = [p for p in inp.demux(vs) if p.size > 0]
        if not pkts or pkts[0].pts is None:
            raise ValueError(f"{src}: no timed video packets")
        pts = [p.pts for p in pkts]
        # one frame's duration: the smallest positive pts step (B-frames reorder pts)
        steps = np.diff(np.sort(np.asarray(pts, dtype=np.int64)))
        frame_dur = int(steps[steps > 0].min()) if (steps > 0).any() else 1
        span = int(max(pts) - min(pts) + frame_dur)
        clip_seconds = float(span * tb)
        loops = loops_for(minutes, clip_seconds)
        facts = {"loops": loops, "frames": loops * len(pkts), "seconds": round(loops * clip_seconds, 3)}
        if dst.is_file():
            return facts
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.stem + ".tmp" + dst.suffix)
        with av.open(str(tmp), "w", format="mp4") as out:
            os_ = out.add_stream_from_template(vs)
            for k in range(loops):
                off = k * span
                for p in pkts:
                    q = av.Packet(bytes(p))
                    q.stream = os_
                    q.time_base = tb
                    q.pts = p.pts + off
                    q.dts = (p.dts if p.dts is not None else p.pts) + off
                    q.is_keyframe = p.is_keyframe
                    q.duration = p.duration
                    out.mux(q)
        os.replace(tmp, dst)
    return facts


def linear_fit(frames: Sequence[float], seconds: Sequence[float]) -> dict:
    """Least-squares ``seconds = a + b * frames``; the largest relative deviation of a run
    from the line says how linear the cost is (0 = perfectly)."""
    x = np.asarray(frames, float)
    y = np.asarray(seconds, float)
    if len(x) < 2:
        return {"a": math.nan, "b": math.nan, "max_rel_dev": math.nan}
    b, a = np.polyfit(x, y, 1)
    dev = np.abs(y - (a + b * x)) / np.maximum(y, 1e-9)
    return {"a": float(a), "b": float(b), "max_rel_dev": float(dev.max())}


def rss_growth(peaks_mb: Sequence[float]) -> float:
    """Peak RSS of the longest run relative to the shortest, minus 1 (0.05 = 5 % more)."""
    if len(peaks_mb) < 2 or peaks_mb[0] <= 0:
        return math.nan
    return float(peaks_mb[-1] / peaks_mb[0] - 1.0)


__all__ = ["linear_fit", "loop_clip", "loops_for", "rss_growth"]
