"""Projection: wall time and GPU-hours of a whole archive from measured per-stage costs.

    python -m bench.project                       # 10,000 patients x 1 h, 64 GPUs (costs from bench/out/results.json)
    python -m bench.project --patients 500 --hours 0.5 --gpus 8 --cpus 96 --no-evaluate

The model (every assumption is printed with the answer):

- **Costs are CPU-seconds per video frame** (user + system time of all threads, from
  ``make bench``'s child processes), so they move to another core count by division; CPU
  time is also less disturbed than wall time by other work on a shared machine. Per-video
  and per-patient costs are fixed (leak audit per output; face-set extraction and the
  training budget per patient).
- **Stages**: decode (once per video: analysis once, render many), detect + track +
  render (once per video), encode (once per output), swap conversion (per frame of the
  swap output), leak audit (per output), evaluation (per frame per evaluated output),
  face-set extraction (per patient), training (per patient, on one GPU).
- **Training is time-budgeted** (``swap.max_minutes``), so its GPU time per patient is the
  budget whatever the GPU; a faster GPU buys more steps, not less time.
- **Resources**: each running training holds one GPU and ``cpus_per_trainer`` CPUs (data
  augmentation); the remaining CPUs run every CPU stage. Work is spread over all
  patients, so the two pools overlap; the wall time is the busier pool's time, times the
  measured Ray overhead, plus a fill time (the first patient's extraction and training
  before its conversion can start).
- **Packing efficiency**: the fraction of the CPUs' time that does useful work (1.0 by
  default: Ray keeps every CPU busy with segments). ``make bench`` checks the CPU-seconds
  the model predicts for a small archive against a measured in-process run; on a shared
  machine the wall time of that run says more about the other load than about packing,
  so it is reported but not fed back.

Everything here is pure arithmetic over :class:`StageCosts`; :func:`costs_from_results`
reads them from ``bench/out/results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

RESULTS_JSON = Path(__file__).resolve().parent / "out" / "results.json"


@dataclass(frozen=True)
class StageCosts:
    """Measured costs. Per-frame costs in CPU-seconds per video frame."""

    decode_cpu_s: float  # per frame, once per video
    detect_cpu_s: float  # per frame, once per video: detect + track + pose fallback + render
    encode_cpu_s: float  # per frame per output
    convert_cpu_s: float = math.nan  # per frame of a swap output: conversion incl. the gate's share
    evaluate_cpu_s: float = math.nan  # per frame per evaluated output (pose + identity + scoring)
    audit_cpu_s: float = 0.0  # per output: the leak audit's fixed cost
    extract_cpu_s: float = math.nan  # per patient: the training face set
    train_gpu_s: float = math.nan  # per patient: the training budget on one GPU
    source: Mapping[str, str] = field(default_factory=dict)  # where each number came from

    def __post_init__(self) -> None:
        for k in ("decode_cpu_s", "detect_cpu_s", "encode_cpu_s", "audit_cpu_s"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"StageCosts.{k} must be a finite number >= 0, got {v!r}")


@dataclass(frozen=True)
class Archive:
    patients: int
    hours_per_patient: float
    fps: float = 25.0
    methods: tuple[str, ...] = ("swap",)
    evaluate: bool = True

    def __post_init__(self) -> None:
        if self.patients < 1 or self.hours_per_patient <= 0 or self.fps <= 0:
            raise ValueError("Archive needs patients >= 1, hours_per_patient > 0 and fps > 0")
        if not self.methods:
            raise ValueError("Archive needs at least one method")

    @property
    def frames_per_patient(self) -> float:
        return self.hours_per_patient * 3600.0 * self.fps


@dataclass(frozen=True)
class Cluster:
    gpus: int
    cpus: int
    cpus_per_trainer: int = 4
    ray_overhead: float = 1.0  # wall(Ray) / wall(in-process), measured
    cpu_efficiency: float = 1.0  # useful fraction of the CPU pool's time, measured locally

    def __post_init__(self) -> None:
        if self.gpus < 0 or self.cpus < 1:
            raise ValueError("Cluster needs gpus >= 0 and cpus >= 1")
        if not (0 < self.cpu_efficiency <= 1.0) or self.ray_overhead < 1.0 - 1e-9:
            raise ValueError("Cluster needs 0 < cpu_efficiency <= 1 and ray_overhead >= 1")

    @property
    def render_cpus(self) -> int:
        return max(1, self.cpus - self.gpus * self.cpus_per_trainer)


@dataclass(frozen=True)
class StageTotal:
    stage: str
    resource: str  # cpu | gpu
    hours: float  # resource-hours for the whole archive


@dataclass(frozen=True)
class Projection:
    archive: Archive
    cluster: Cluster
    stages: tuple[StageTotal, ...]
    cpu_hours: float
    gpu_hours: float
    wall_cpu_h: float
    wall_gpu_h: float
    fill_h: float
    wall_h: float
    bound_resource: str
    bound_stage: str
    assumptions: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["archive"]["methods"] = list(self.archive.methods)
        return d


def project(costs: StageCosts, archive: Archive, cluster: Cluster) -> Projection:
    """Wall time and resource-hours of ``archive`` on ``cluster`` (see the module doc)."""
    f = archive.frames_per_patient
    n = archive.patients
    outs = len(archive.methods)
    swap = "swap" in archive.methods
    if swap:
        missing = [k for k in ("convert_cpu_s", "extract_cpu_s", "train_gpu_s") if not math.isfinite(getattr(costs, k))]
        if missing:
            raise ValueError(f"the swap needs measured {', '.join(missing)}; run `make bench` with the swap rows, or project without swap")
        if cluster.gpus < 1:
            raise ValueError("the swap trains one model per patient on a GPU: give the cluster at least one GPU")
    if archive.evaluate and not math.isfinite(costs.evaluate_cpu_s):
        raise ValueError("evaluation cost not measured; project with evaluate=False")
    per_patient: list[tuple[str, str, float]] = [
        ("decode", "cpu", f * costs.decode_cpu_s),
        ("detect + track + render", "cpu", f * costs.detect_cpu_s),
        ("encode", "cpu", f * costs.encode_cpu_s * outs),
        ("leak audit", "cpu", costs.audit_cpu_s * outs),
    ]
    if swap:
        per_patient += [
            ("swap conversion", "cpu", f * costs.convert_cpu_s),
            ("face-set extraction", "cpu", costs.extract_cpu_s),
            ("swap training", "gpu", costs.train_gpu_s),
        ]
    if archive.evaluate:
        per_patient.append(("evaluation", "cpu", f * costs.evaluate_cpu_s * outs))
    stages = tuple(StageTotal(s, r, n * sec / 3600.0) for s, r, sec in per_patient)
    cpu_h = sum(s.hours for s in stages if s.resource == "cpu")
    gpu_h = sum(s.hours for s in stages if s.resource == "gpu")
    wall_cpu = cpu_h / (cluster.render_cpus * cluster.cpu_efficiency) * cluster.ray_overhead
    wall_gpu = gpu_h / cluster.gpus * cluster.ray_overhead if gpu_h > 0 else 0.0
    fill = ((costs.extract_cpu_s / max(1, cluster.cpus_per_trainer) + costs.train_gpu_s) / 3600.0) if swap else 0.0
    bound_res = "gpu" if wall_gpu > wall_cpu else "cpu"
    bound = max((s for s in stages if s.resource == bound_res), key=lambda s: s.hours)
    a = [
        f"archive: {n:,} patients x {archive.hours_per_patient:g} h of video at {archive.fps:g} fps = {f:,.0f} frames per patient; "
        f"outputs per video: {', '.join(archive.methods)}; evaluation {'of every frame of every output' if archive.evaluate else 'off'}",
        f"cluster: {cluster.gpus} GPUs, {cluster.cpus} CPUs; each running training holds 1 GPU + {cluster.cpus_per_trainer} CPUs, "
        f"leaving {cluster.render_cpus} CPUs for the CPU stages (reserved the whole run)",
        "costs are CPU-seconds per frame measured on the reference machine; cluster CPUs are assumed as fast per core",
        f"CPU packing efficiency {cluster.cpu_efficiency:.2f} (1.0 = every CPU busy all the time) and Ray overhead x{cluster.ray_overhead:.2f} "
        "(Ray local / in-process, measured, without Ray's fixed start-up)",
        "the two pools overlap across patients: wall = max(CPU pool, GPU pool) + fill (the first patient's extraction and training)",
        "CPU work splits freely over CPUs (Ray segments of one video render in parallel); storage and network are not limits",
    ]
    if swap:
        a.append(f"swap training is time-budgeted: {costs.train_gpu_s / 60:.1f} GPU-minutes per patient (swap.max_minutes), one GPU per training")
        a.append("swap conversion runs on CPUs at the measured CPU cost (no GPU conversion measured); the identity gate checks every "
                 "k-th frame (swap.gate_every) of a trained model that passes it")
    for k, v in sorted(costs.source.items()):
        a.append(f"{k}: {v}")
    return Projection(archive, cluster, stages, cpu_h, gpu_h, wall_cpu, wall_gpu, fill, max(wall_cpu, wall_gpu) + fill,
                      bound_res, bound.stage, tuple(a))


def cpus_for(costs: StageCosts, archive: Archive, cluster: Cluster, hours: float) -> int:
    """CPUs the cluster would need for the CPU pool alone to finish in ``hours``."""
    p = project(costs, archive, cluster)
    need_render = p.cpu_hours * cluster.ray_overhead / (cluster.cpu_efficiency * max(hours - p.fill_h, 1e-9))
    return int(math.ceil(need_render + cluster.gpus * cluster.cpus_per_trainer))


def format_projection(p: Projection, target_h: float | None = None) -> str:
    lines = [f"Projection: {p.archive.patients:,} patients x {p.archive.hours_per_patient:g} h on {p.cluster.gpus} GPUs + {p.cluster.cpus} CPUs", ""]
    lines.append("| stage | resource | resource-hours | share of its pool |")
    lines.append("| --- | --- | ---: | ---: |")
    for s in sorted(p.stages, key=lambda s: -s.hours):
        pool = p.cpu_hours if s.resource == "cpu" else p.gpu_hours
        lines.append(f"| {s.stage} | {s.resource.upper()} | {s.hours:,.0f} | {100 * s.hours / pool:.0f} % |" if pool else f"| {s.stage} | {s.resource} | 0 | - |")
    lines += [
        "",
        f"- CPU pool: {p.cpu_hours:,.0f} CPU-hours -> {p.wall_cpu_h:,.1f} h on {p.cluster.render_cpus} CPUs",
        f"- GPU pool: {p.gpu_hours:,.0f} GPU-hours -> {p.wall_gpu_h:,.1f} h on {p.cluster.gpus} GPUs",
        f"- fill: {p.fill_h:.2f} h",
        f"- **wall time {p.wall_h:,.1f} h, bounded by the {p.bound_resource.upper()} pool, stage: {p.bound_stage}**"
        + (f" (aim: under {target_h:g} h: {'met' if p.wall_h < target_h else 'NOT met'})" if target_h else ""),
        "",
        "Assumptions:",
    ]
    lines += [f"- {a}" for a in p.assumptions]
    return "\n".join(lines)


def _get(d: Mapping[str, Any], *path: str) -> Any:
    for k in path:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def costs_from_results(res: Mapping[str, Any]) -> StageCosts:
    """Stage costs from ``make bench``'s results (``bench/out/results.json``, key
    ``stage_costs``, filled by :mod:`bench.run`)."""
    c = res.get("stage_costs") or {}
    need = ("decode_cpu_s", "detect_cpu_s", "encode_cpu_s")
    if any(c.get(k) is None for k in need):
        raise ValueError(f"results lack the per-stage costs {need}; run `make bench` first")

    def num(k: str, default: float = math.nan) -> float:
        v = c.get(k)
        return float(v) if v is not None else default

    return StageCosts(
        decode_cpu_s=num("decode_cpu_s"), detect_cpu_s=num("detect_cpu_s"), encode_cpu_s=num("encode_cpu_s"),
        convert_cpu_s=num("convert_cpu_s"), evaluate_cpu_s=num("evaluate_cpu_s"), audit_cpu_s=num("audit_cpu_s", 0.0),
        extract_cpu_s=num("extract_cpu_s"), train_gpu_s=num("train_gpu_s"), source=dict(c.get("source") or {}),
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.project", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(RESULTS_JSON), help="make bench's results.json (per-stage costs)")
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--hours", type=float, default=1.0, help="hours of video per patient")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--gpus", type=int, default=64)
    ap.add_argument("--cpus", type=int, default=0, help="default: 12 per GPU (8-GPU nodes with 96 vCPUs)")
    ap.add_argument("--cpus-per-trainer", type=int, default=4)
    ap.add_argument("--methods", default="swap")
    ap.add_argument("--no-evaluate", action="store_true")
    ap.add_argument("--ray-overhead", type=float, help="default: measured (results.json), else 1.0")
    ap.add_argument("--cpu-efficiency", type=float, help="fraction of CPU time doing useful work (default 1.0)")
    ap.add_argument("--target-hours", type=float, default=48.0)
    args = ap.parse_args(argv)
    p = Path(args.results)
    if not p.is_file():
        print(f"{p} not found: run `make bench` first (it measures the per-stage costs)", file=sys.stderr)
        return 2
    res = json.loads(p.read_text())
    costs = costs_from_results(res)
    meas = res.get("projection_inputs") or {}
    cl = Cluster(args.gpus, args.cpus or 12 * max(1, args.gpus), args.cpus_per_trainer,
                 ray_overhead=args.ray_overhead or float(meas.get("ray_overhead") or 1.0),
                 cpu_efficiency=args.cpu_efficiency or float(meas.get("cpu_efficiency") or 1.0))
    ar = Archive(args.patients, args.hours, args.fps, tuple(m for m in args.methods.split(",") if m), not args.no_evaluate)
    pr = project(costs, ar, cl)
    print(format_projection(pr, args.target_hours))
    print(f"\nCPUs needed for the CPU pool to finish in {args.target_hours:g} h: {cpus_for(costs, ar, cl, args.target_hours):,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
