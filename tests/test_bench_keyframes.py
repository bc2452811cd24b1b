"""bench.keyframes' coverage measure: the share of the reference's hidden area another
schedule also hides, frame by frame (the privacy figure beside each speed-up)."""

from __future__ import annotations

import numpy as np

from bench.keyframes import UNCOVERED, _summary, coverage
from deid.types import FaceRegion, FrameDecision, FramePlan

W, H = 100, 80


def plan(i: int, *boxes, decision: FrameDecision = FrameDecision.OK) -> FramePlan:
    return FramePlan(i, tuple(FaceRegion(np.asarray(b, np.float32)) for b in boxes), decision)


def test_same_regions_cover_everything():
    ref = [plan(0, (10, 10, 50, 60)), plan(1, (12, 10, 52, 60))]
    c = coverage(ref, [plan(0, (10, 10, 50, 60)), plan(1, (12, 10, 52, 60))], W, H)
    assert c["uncovered_frames"] == 0 and c["min_share"] == 1.0 and c["frames_with_regions"] == 2


def test_missing_or_shifted_region_counts_as_uncovered():
    ref = [plan(0, (10, 10, 50, 60)), plan(1, (10, 10, 50, 60)), plan(2, (10, 10, 50, 60))]
    other = [plan(0, (10, 10, 50, 60)), plan(1), plan(2, (30, 10, 70, 60))]  # frame 1 missed, frame 2 half off
    c = coverage(ref, other, W, H)
    assert c["uncovered_frames"] == 2
    assert c["min_share"] == 0.0 and c["worst_frames"][0] == (0.0, 1)
    assert 0 < c["worst_frames"][1][0] < UNCOVERED and c["worst_frames"][1][1] == 2


def test_larger_region_still_covers_and_counts_the_extra_area():
    ref = [plan(0, (20, 20, 40, 40))]
    c = coverage(ref, [plan(0, (10, 10, 60, 60))], W, H)
    assert c["uncovered_frames"] == 0 and c["extra_area_px_per_frame"] > 0


def test_fail_closed_reference_frames_are_counted_apart():
    ref = [plan(0, decision=FrameDecision.FAIL_CLOSED), plan(1, (10, 10, 50, 60))]
    other = [plan(0, (10, 10, 50, 60)), plan(1, decision=FrameDecision.FAIL_CLOSED)]  # redacted whole: covers all
    c = coverage(ref, other, W, H)
    assert c["ref_fail_closed_frames"] == 1 and c["ref_fail_closed_now_regions"] == 1
    assert c["uncovered_frames"] == 0 and c["frames_with_regions"] == 1


def test_summary_totals_each_variant_over_the_clips(capsys):
    rows = {1: {"wall_s": 2.0}, "detect.extra_every=16": {"wall_s": 1.0, "uncovered_frames": 3}}
    _summary({"a.mp4": rows, "b.mp4": {1: {"wall_s": 2.0}, "detect.extra_every=16": {"wall_s": 1.0, "uncovered_frames": 2}}})
    out = capsys.readouterr().out
    assert "reference k=1 4.00 s" in out
    assert "'detect.extra_every=16': 2.00 s (2.00x), 5 frames uncovered" in out
