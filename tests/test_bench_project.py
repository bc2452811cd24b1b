"""bench/project.py: the archive projection is plain arithmetic — check it against hand sums."""

from __future__ import annotations

import json
import sys
from pathlib import Path
import math

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not an installed package

from bench.project import Archive, Cluster, StageCosts, costs_from_results, cpus_for, format_projection, main, project

COSTS = StageCosts(
    decode_cpu_s=0.002,
    detect_cpu_s=0.010,
    encode_cpu_s=0.003,
    convert_cpu_s=0.020,
    evaluate_cpu_s=0.050,
    audit_cpu_s=12.0,
    extract_cpu_s=60.0,
    train_gpu_s=480.0,
)


def _stage(p, name):
    return next(s for s in p.stages if s.stage == name)


def test_hand_computed_totals_for_swap_with_evaluation():
    ar = Archive(patients=100, hours_per_patient=0.5, fps=20.0, methods=("swap",), evaluate=True)
    cl = Cluster(gpus=8, cpus=40, cpus_per_trainer=2)
    p = project(COSTS, ar, cl)
    f = 0.5 * 3600 * 20  # 36,000 frames per patient
    per_patient_cpu = f * (0.002 + 0.010 + 0.003 + 0.020 + 0.050) + 12.0 + 60.0
    assert p.cpu_hours == pytest.approx(100 * per_patient_cpu / 3600)
    assert p.gpu_hours == pytest.approx(100 * 480.0 / 3600)
    assert cl.render_cpus == 24  # 40 CPUs less 2 per running training on 8 GPUs
    assert p.wall_cpu_h == pytest.approx(p.cpu_hours / 24)  # 3.6 h
    assert p.wall_gpu_h == pytest.approx(p.gpu_hours / 8)  # 1.7 h
    assert p.fill_h == pytest.approx((60.0 / 2 + 480.0) / 3600)
    assert p.wall_h == pytest.approx(max(p.wall_cpu_h, p.wall_gpu_h) + p.fill_h)
    # evaluation is the largest CPU stage here (0.050 of 0.085 CPU-s per frame)
    assert p.bound_resource == "cpu" and p.bound_stage == "evaluation"
    assert _stage(p, "evaluation").hours == pytest.approx(100 * f * 0.050 / 3600)


def test_more_outputs_pay_encode_and_audit_per_output_but_decode_once():
    one = project(COSTS, Archive(10, 1.0, 25.0, ("blur",), evaluate=False), Cluster(0, 8, 0))
    three = project(COSTS, Archive(10, 1.0, 25.0, ("blur", "mask", "pixelate"), evaluate=False), Cluster(0, 8, 0))
    assert _stage(three, "decode").hours == pytest.approx(_stage(one, "decode").hours)
    assert _stage(three, "detect + track + render").hours == pytest.approx(_stage(one, "detect + track + render").hours)
    assert _stage(three, "encode").hours == pytest.approx(3 * _stage(one, "encode").hours)
    assert _stage(three, "leak audit").hours == pytest.approx(3 * _stage(one, "leak audit").hours)
    assert one.gpu_hours == 0 and one.fill_h == 0 and one.bound_resource == "cpu"


def test_linear_in_patients_and_hours():
    base = project(COSTS, Archive(50, 1.0), Cluster(8, 96))
    double_p = project(COSTS, Archive(100, 1.0), Cluster(8, 96))
    double_h = project(COSTS, Archive(50, 2.0), Cluster(8, 96))
    assert double_p.cpu_hours == pytest.approx(2 * base.cpu_hours)
    assert double_p.gpu_hours == pytest.approx(2 * base.gpu_hours)
    # longer videos cost more CPU but the same training budget per patient
    assert double_h.gpu_hours == pytest.approx(base.gpu_hours)
    assert double_h.cpu_hours > 1.9 * base.cpu_hours


def test_gpu_bound_when_cpus_are_plenty_and_overheads_scale_wall():
    cheap = StageCosts(0.0001, 0.0001, 0.0001, convert_cpu_s=0.0001, evaluate_cpu_s=0.0001, extract_cpu_s=1.0, train_gpu_s=3600.0)
    p = project(cheap, Archive(1000, 0.1), Cluster(gpus=10, cpus=10_000))
    assert p.bound_resource == "gpu" and p.bound_stage == "swap training"
    assert p.wall_gpu_h == pytest.approx(100.0)  # 1000 GPU-hours on 10 GPUs
    slow = project(cheap, Archive(1000, 0.1), Cluster(gpus=10, cpus=10_000, ray_overhead=1.1))
    assert slow.wall_gpu_h == pytest.approx(110.0)
    ineff = project(COSTS, Archive(10, 1.0, evaluate=False), Cluster(1, 16, 0, cpu_efficiency=0.5))
    eff = project(COSTS, Archive(10, 1.0, evaluate=False), Cluster(1, 16, 0))
    assert ineff.wall_cpu_h == pytest.approx(2 * eff.wall_cpu_h)


def test_cpus_for_meets_the_deadline():
    ar, cl = Archive(2000, 1.0), Cluster(16, 64)
    need = cpus_for(COSTS, ar, cl, 48.0)
    p = project(COSTS, ar, Cluster(16, need))
    assert p.wall_cpu_h + p.fill_h <= 48.0 + 1e-6
    p_less = project(COSTS, ar, Cluster(16, need - 8))
    assert p_less.wall_cpu_h + p_less.fill_h > 48.0


def test_refuses_what_it_cannot_project():
    with pytest.raises(ValueError, match="GPU"):
        project(COSTS, Archive(1, 1.0, methods=("swap",)), Cluster(0, 8))
    partial = StageCosts(0.001, 0.01, 0.002)
    with pytest.raises(ValueError, match="convert_cpu_s"):
        project(partial, Archive(1, 1.0, methods=("swap",), evaluate=False), Cluster(1, 8))
    with pytest.raises(ValueError, match="evaluation"):
        project(partial, Archive(1, 1.0, methods=("blur",), evaluate=True), Cluster(0, 8))
    with pytest.raises(ValueError, match="decode_cpu_s"):
        StageCosts(math.nan, 0.01, 0.002)
    with pytest.raises(ValueError):
        Archive(0, 1.0)
    with pytest.raises(ValueError):
        Cluster(1, 8, cpu_efficiency=1.5)


def test_format_names_the_bound_and_prints_assumptions():
    p = project(COSTS, Archive(10_000, 1.0), Cluster(64, 768))
    text = format_projection(p, 48.0)
    assert f"bounded by the {p.bound_resource.upper()} pool, stage: {p.bound_stage}" in text
    assert ("NOT met" in text) == (p.wall_h >= 48.0)
    assert "Assumptions:" in text and "10,000 patients x 1 h" in text
    assert "time-budgeted" in text  # the training assumption is stated
    for s in p.stages:
        assert f"| {s.stage} |" in text


def test_costs_from_results_and_cli(tmp_path, capsys):
    res = {"stage_costs": {"decode_cpu_s": 0.002, "detect_cpu_s": 0.01, "encode_cpu_s": 0.003, "convert_cpu_s": 0.02,
                           "evaluate_cpu_s": 0.05, "audit_cpu_s": 12.0, "extract_cpu_s": 60.0, "train_gpu_s": 480.0,
                           "source": {"decode_cpu_s": "decode-only run"}},
           "projection_inputs": {"ray_overhead": 1.05, "cpu_efficiency": 0.8}}
    c = costs_from_results(res)
    assert c.train_gpu_s == 480.0 and c.source["decode_cpu_s"] == "decode-only run"
    with pytest.raises(ValueError, match="make bench"):
        costs_from_results({"stage_costs": {"decode_cpu_s": 0.1}})
    p = tmp_path / "results.json"
    p.write_text(json.dumps(res))
    assert main(["--results", str(p), "--patients", "100", "--gpus", "4", "--cpus", "48"]) == 0
    out = capsys.readouterr().out
    assert "100 patients x 1 h on 4 GPUs + 48 CPUs" in out
    assert "efficiency 0.80" in out and "x1.05" in out
    assert "decode_cpu_s: decode-only run" in out
    assert main(["--results", str(tmp_path / "missing.json")]) == 2
