"""bench/recall.py: the frame-by-frame comparison with deface and the reviewed-detections
file that excuses only what a person looked at."""

from __future__ import annotations

import json

import pytest

from bench import recall as R


def regions(*frames):
    return [{"index": i, "decision": d, "boxes": b} for i, (d, b) in enumerate(frames)]


def test_compare_counts_visible_faces_and_keeps_them():
    deface = [[[10, 10, 30, 30, 0.9]], [[10, 10, 30, 30, 0.9]], [[100, 100, 120, 120, 0.3]]]
    detector = [[[10, 10, 30, 30, 0.8]], [], []]
    reg = regions(("ok", [[0, 0, 40, 40]]), ("fail_closed", []), ("ok", [[0, 0, 40, 40]]))
    rec = R.compare_clip("c", deface, detector, reg)
    # frame 0: hidden by a region; frame 1: redacted whole; frame 2: left visible
    assert rec.frames_deface_face_visible_in_deid == 1
    assert rec.visible == [[2.0, 100.0, 100.0, 120.0, 120.0, 0.3]]
    assert rec.frames_redacted == 1


def test_review_excuses_only_matching_not_a_face_entries():
    visible = [[4, 10, 10, 20, 20, 0.2], [5, 10, 10, 20, 20, 0.2], [6, 50, 50, 60, 60, 0.2], [6, 10, 10, 20, 20, 0.2], [7, 0, 0, 9, 9, 0.2]]
    entries = [
        {"clip": "c", "frame": 4, "box": [10, 10, 20, 20], "verdict": "not a face"},
        {"clip": "c", "frame": 5, "box": [30, 30, 40, 40], "verdict": "not a face"},  # another place
        {"clip": "c", "frame": 6, "box": [10, 10, 20, 20], "verdict": "not a face"},  # the other box of frame 6 is new
        {"clip": "c", "frame": 7, "box": [0, 0, 9, 9], "verdict": "face"},
        {"clip": "other", "frame": 4, "box": [10, 10, 20, 20], "verdict": "not a face"},
    ]
    rv = R.apply_review("c", visible, entries)
    assert rv["frames_reviewed_not_face"] == [4]
    assert rv["frames_unreviewed_or_face"] == [5, 6, 7]
    assert R.apply_review("c", visible, [])["frames_unreviewed_or_face"] == [4, 5, 6, 7]


def test_review_file_is_well_formed(tmp_path):
    entries = R.load_review()
    assert entries and all(e["clip"] == "pancake_demo" and e["what"] for e in entries)
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"entries": [{"clip": "c", "frame": 1, "box": [0, 0, 1, 1], "verdict": "maybe"}]}))
    with pytest.raises(ValueError, match="verdict"):
        R.load_review(bad)
