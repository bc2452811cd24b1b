"""Shared helpers for the benchmarks: reference clips, timers, medians, machine facts."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
DEMO_CLIP = REPO / "demo_media" / "flipping_a_pancake.mp4"


def make_clip(src: Path, dst: Path, size: tuple[int, int] = (640, 360), loops: int = 1, crf: int = 18) -> Path:
    """Re-encode ``src`` scaled to ``size`` (and looped ``loops`` times) — the benchmark input."""
    import av
    import cv2

    from deid.io import VideoWriter, iter_frames, probe

    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    info = probe(src)
    tmp = dst.with_suffix(".tmp.mp4")
    with VideoWriter(tmp, size[0], size[1], info.fps, crf=crf, preset="veryfast", timing="cfr") as w:
        for _ in range(loops):
            for _, f in iter_frames(src):
                w.write(cv2.resize(f, size, interpolation=cv2.INTER_LINEAR))
    os.replace(tmp, dst)
    return dst


def bare_transcode(src: Path, dst: Path, crf: int = 20, preset: str = "veryfast") -> int:
    """The physical limit of the pipeline: decode every frame to RGB and encode it again
    with the same encoder settings deid uses, same threads layout (decode thread)."""
    from deid.io import VideoReader, VideoWriter, probe
    from deid.pipeline import _prefetch

    info = probe(src)
    n = 0
    with VideoWriter(dst, info.width, info.height, info.fps, crf=crf, preset=preset, timing="cfr") as w:
        for b in _prefetch(VideoReader(src, info=info, chunk_size=32)):
            for f in b.frames:
                w.write(f)
                n += 1
    return n


def timed(fn: Callable[[], object], repeats: int = 3, label: str = "") -> tuple[float, list[float]]:
    ts = []
    for k in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        print(f"  {label} run {k + 1}/{repeats}: {ts[-1]:.3f} s", flush=True)
    return statistics.median(ts), ts


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_facts() -> dict[str, str]:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor(),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
    }
