"""bench/table.py: the results.md writer never invents a number and keeps tables well-formed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
import math

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not an installed package

from bench.table import fmt, length_table, main, md_table, plot_length, recall_table, render, speed_table, targets_table


def _cells(line: str) -> list[str]:
    # split on unescaped pipes
    parts, cur, prev = [], "", ""
    for ch in line.strip()[1:-1]:
        if ch == "|" and prev != "\\":
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
        prev = ch
    parts.append(cur.strip())
    return parts


def test_fmt_and_md_table_shape():
    assert fmt(None) == "-" and fmt(float("nan")) == "-" and fmt(1.23456, "{:.2f}") == "1.23"
    t = md_table(("a", "b"), [[1, "x|y"], [2, "line\nbreak"]])
    lines = t.splitlines()
    assert len(lines) == 4
    assert all(len(_cells(l)) == 2 for l in lines)
    assert "x\\|y" in lines[2] and "line break" in lines[3]
    with pytest.raises(ValueError, match="2 cells"):
        md_table(("a", "b", "c"), [[1, 2]])


def test_speed_rows_not_run_has_no_numbers():
    rows = [
        {"path": "bare", "input": "clip", "frames": 310, "frames_out": 310, "fps": 250.0, "runs_s": [1.2, 1.24, 1.3],
         "x_bare": 1.0, "x_deface": 30.0, "cpu_per_frame": 0.0031, "peak_rss_mb": 190.4, "note": "ref", "status": "ok"},
        {"path": "deface", "input": "clip", "status": "not run (pip could not install deface)", "fps": 123.0, "note": ""},
        {"path": "swap training", "input": "clip", "fps": 1.5, "unit": "steps/s", "runs_s": [60.0], "status": "ok"},
    ]
    lines = speed_table(rows).splitlines()
    ok, missing, train = (_cells(l) for l in lines[2:])
    assert ok[2] == "310 -> 310" and ok[3] == "250.0" and ok[4] == "1.20, 1.24, 1.30" and ok[10] == "190"
    assert ok[8] == "-" and ok[9] == "-"  # CPU ratios not given -> not invented
    assert missing[3] == "not run (pip could not install deface)"
    assert "123" not in lines[3]  # a row that did not run never shows a number
    assert train[3] == "1.50 steps/s" and train[5] == "-" and train[6] == "-"


def test_length_recall_targets_tables():
    lt = length_table([
        {"minutes": 1, "video_seconds": 64, "frames": 1600, "seconds": 16.0, "cpu_per_frame": 0.01, "peak_rss_mb": 450, "status": "ok"},
        {"minutes": 20, "video_seconds": 1200, "frames": 30000, "status": "not run (timed out after 900 s)"},
    ]).splitlines()
    assert _cells(lt[2])[3] == "10.00"  # s per 1000 frames
    assert _cells(lt[3])[2] == "-" and _cells(lt[3])[-1] == "not run (timed out after 900 s)"
    rt = recall_table([
        {"clip": "c", "frames": 10, "faces_deface": 9, "faces_deid_detector": 8, "frames_deface_only": 1, "frames_deid_only": 0,
         "frames_deface_face_visible_in_deid": 0, "frames_deid_region_not_in_deface": 2, "frames_redacted": 1, "status": "ok"},
        {"clip": "d", "status": "not run (deface not installed)"},
    ]).splitlines()
    assert _cells(rt[2])[2] == "9 / 8" and _cells(rt[3])[1] == "-"
    tt = targets_table([{"target": "t1", "measured": "5x", "met": True}, {"target": "t2", "measured": "0.2", "met": False},
                        {"target": "t3", "met": None}]).splitlines()
    assert [_cells(l)[2] for l in tt[2:]] == ["met", "NOT met", "not measured"]


def _results():
    return {
        "argv": "--repeats 3", "repeats": 3, "elapsed_s": 900.0,
        "machine": {"cpu": "X", "cores": "2", "date": "2030-01-01 00:00 UTC"},
        "targets": [{"target": "blur >= 3x deface", "measured": "5.0x", "met": True}],
        "speed_sections": [{"title": "Speed on the demo clip", "intro": "intro text", "rows": [
            {"path": "bare", "input": "c", "frames": 10, "frames_out": 10, "fps": 100.0, "runs_s": [0.1], "status": "ok"}]}],
        "length": {"runs": [{"minutes": 1, "video_seconds": 64, "frames": 1600, "seconds": 16.0, "cpu_per_frame": 0.01,
                             "peak_rss_mb": 450, "status": "ok"}], "summary": "linear", "plot": "results_length.png"},
        "recall": {"rows": [], "summary": "none visible"},
        "projection_text": "wall time 10 h",
        "notes": ["a note"],
    }


def test_render_whole_document(tmp_path):
    md = render(_results())
    assert md.startswith("# deid benchmarks\n")
    assert "2030-01-01 00:00 UTC" in md and "900 s" in md and "ran 3 times" in md
    for heading in ("## Targets", "## Speed on the demo clip", "## Time and memory vs video length",
                    "## Face recall", "## Projection to a whole archive", "## Notes"):
        assert heading in md
    assert "![time and peak memory vs video length](results_length.png)" in md
    # every table line has the same number of cells as its header
    block: list[str] = []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            assert len({len(_cells(l)) for l in block}) == 1, block
            block = []
    src = tmp_path / "r.json"
    src.write_text(json.dumps(_results()))
    assert main([str(src), str(tmp_path / "r.md")]) == 0
    assert (tmp_path / "r.md").read_text() == md


def test_render_survives_missing_sections():
    md = render({"machine": {}, "speed_sections": []})
    assert md.startswith("# deid benchmarks") and "## Targets" not in md


def test_plot_length(tmp_path):
    runs = [{"video_seconds": s, "seconds": s / 4, "peak_rss_mb": 400 + i, "status": "ok"} for i, s in enumerate((64, 304, 1200))]
    p = plot_length(runs, tmp_path / "p.png")
    assert p is not None and p.stat().st_size > 1000
    assert plot_length(runs[:1], tmp_path / "q.png") is None
    assert not math.isnan(runs[0]["seconds"])
