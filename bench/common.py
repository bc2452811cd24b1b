"""Shared helpers for the benchmarks: reference clips, child-process runs, timers,
medians, machine facts.

Every measurement of ``make bench`` runs in its own child process (``python -m
bench.child``) so that its peak memory (``VmHWM``, see :func:`peak_rss_mb`) is its own and one run's caches
do not help the next one; the child reports wall time, CPU time and peak RSS of the
timed work as one JSON line (see :func:`run_child`).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
# DEID_BENCH_OUT: another scratch folder (make bench gives bench/ray_overhead.py its own, so
# a second engineer running that script by hand in the same checkout cannot clobber it)
OUT = Path(os.environ["DEID_BENCH_OUT"]).resolve() if os.environ.get("DEID_BENCH_OUT") else REPO / "bench" / "out"
DEMO_MEDIA = REPO / "demo_media"
DEMO_CLIP = DEMO_MEDIA / "flipping_a_pancake.mp4"
SHARED_MEDIA = Path(os.environ.get("DEID_SHARED_MEDIA", REPO.parent / "shared" / "media"))
RESULT_TAG = "BENCH_RESULT "


def make_clip(src: Path, dst: Path, size: tuple[int, int] = (640, 360), loops: int = 1, crf: int = 18, max_frames: int = 0) -> Path:
    """Re-encode ``src`` scaled to ``size`` (and looped ``loops`` times; its first
    ``max_frames`` frames when > 0) — the benchmark input."""
    import cv2

    from deid.io import VideoWriter, iter_frames, probe

    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    info = probe(src)
    tmp = dst.with_suffix(".tmp.mp4")
    with VideoWriter(tmp, size[0], size[1], info.fps, crf=crf, preset="veryfast", timing="cfr") as w:
        for _ in range(loops):
            for i, f in iter_frames(src):
                if max_frames and i >= max_frames:
                    break
                w.write(cv2.resize(f, size, interpolation=cv2.INTER_LINEAR))
    os.replace(tmp, dst)
    return dst


def bare_transcode(src: Path, dst: Path, cfg: Any = None) -> int:
    """The physical limit of the pipeline: decode every frame to RGB and encode it again
    with the encoder settings deid uses (``cfg.io``: crf, preset, timing, time base) and
    the same thread layout (a reader thread, a writer thread); no detection, no
    anonymization, no audit. Returns the number of frames written."""
    from deid.config import Config
    from deid.io import VideoReader, VideoWriter, probe
    from deid.io.prefetch import prefetch
    from deid.pipeline import _WriterThread

    cfg = cfg or Config()
    info = probe(src)
    n = 0
    with VideoWriter.like(dst, info, cfg.io) as w:  # the pipeline's own encoder settings
        reader = VideoReader(src, info=info, chunk_size=cfg.io.chunk_size, decoder=cfg.io.decoder, batch_mb=cfg.io.batch_mb)
        wt = _WriterThread({"bare": w}, batch=reader.chunk_size)
        try:
            for b in prefetch(reader):
                for f, pts in zip(b.frames, b.pts):
                    wt.put("bare", f, pts)
                    n += 1
        finally:
            wt.close()
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
    """Peak resident memory of this process, MB: ``VmHWM`` from /proc/self/status.

    Not ``ru_maxrss``: Linux carries ``ru_maxrss`` across ``execve`` (the high-water mark
    of the forked copy of the parent is kept), so a child started from a 250 MB parent
    reports at least 250 MB whatever it does. ``VmHWM`` belongs to the process's own
    address space, which ``execve`` replaces. ``ru_maxrss`` is the fallback elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process (all its threads) or its waited-for children."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


class Meter:
    """Wall and CPU time of a block of work in this process (children included, for
    tools that run ffmpeg as a subprocess), and the peak RSS of the process so far."""

    def __enter__(self) -> "Meter":
        self.t0 = time.perf_counter()
        self.c0 = cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.cpu = cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN) - self.c0

    def as_dict(self) -> dict[str, float]:
        return {
            "seconds": round(self.seconds, 4),
            "cpu_seconds": round(self.cpu, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "children_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0, 1),
        }


def emit(result: dict[str, Any]) -> None:
    """The child's answer: one tagged JSON line on stdout (the parent ignores the rest)."""
    print(RESULT_TAG + json.dumps(result, default=str), flush=True)


def run_child(task: str, spec: dict[str, Any], timeout: float = 900, python: str | None = None,
              module: str = "bench.child", script: str | None = None, prefix: Sequence[str] = ()) -> dict[str, Any]:
    """Run one measurement in a fresh process and return its JSON answer. Never raises:
    a failure comes back as ``{"ok": False, "error": ...}`` with the tail of stderr.
    ``prefix``: a command to run it under (e.g. ``unshare -n`` for no network)."""
    cmd = list(prefix) + [python or sys.executable]
    cmd += [script] if script else ["-m", module]
    cmd += [task, json.dumps(spec)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="3")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s", "wall_s": round(time.perf_counter() - t0, 1)}
    wall = time.perf_counter() - t0
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            out = json.loads(line[len(RESULT_TAG):])
            out.setdefault("ok", p.returncode == 0)
            out["process_wall_s"] = round(wall, 2)
            return out
    tail = "\n".join((p.stderr or "").strip().splitlines()[-6:])
    return {"ok": False, "error": f"exit code {p.returncode}, no result; stderr: {tail}", "process_wall_s": round(wall, 2)}


def median(xs: Sequence[float]) -> float:
    xs = [float(x) for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def machine_facts() -> dict[str, str]:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = ""
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:  # noqa: BLE001
        gpu = "unknown (torch not importable)"
    return {
        "cpu": cpu or platform.processor(),
        "cores": str(os.cpu_count()),
        "memory": mem,
        "gpu": gpu,
        "load_average_1_5_15": load,
        "os": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "uncommitted changes (deid/, configs/, ray_jobs/)": _dirty(),
    }


def _dirty() -> str:
    """Files of the measured code that differ from the commit (a shared checkout moves)."""
    p = subprocess.run(["git", "status", "--porcelain", "--", "deid", "configs", "ray_jobs"], cwd=REPO, capture_output=True, text=True)
    files = [l[3:] for l in p.stdout.splitlines() if l.strip()]
    return "none" if not files else f"{len(files)}: " + ", ".join(files[:6]) + (" ..." if len(files) > 6 else "")
