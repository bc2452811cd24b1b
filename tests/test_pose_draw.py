"""draw_skeleton."""

from __future__ import annotations

import numpy as np
import pytest

from deid.pose import draw_skeleton, schema
from deid.types import Keypoints


def person(score=0.9):
    kp = np.zeros((1, 133, 3), np.float32)
    kp[0, schema.index_of("left_shoulder")] = (70, 40, score)
    kp[0, schema.index_of("right_shoulder")] = (30, 40, score)
    kp[0, schema.index_of("left_hip")] = (65, 90, score)
    return kp


def test_draws_on_a_copy():
    frame = np.zeros((120, 100, 3), np.uint8)
    out = draw_skeleton(frame, Keypoints(person()), color=(255, 0, 0))
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert frame.max() == 0  # input untouched
    r, g, b = out[40, 50]
    assert r > 150 and g == 0 and b == 0  # on the shoulder-shoulder line (anti-aliased)
    assert tuple(out[40, 70]) == (255, 0, 0)  # on a joint
    assert out[100:, :].max() == 0  # nothing where no point is


def test_low_scores_and_parts_are_skipped():
    frame = np.zeros((120, 100, 3), np.uint8)
    assert draw_skeleton(frame, person(0.1), min_score=0.3).max() == 0
    assert draw_skeleton(frame, person(), parts=["face"]).max() == 0
    # single-person (K, 3) arrays are accepted; default colours are per part
    assert draw_skeleton(frame, person()[0]).max() > 0


def test_rejects_other_schemas():
    with pytest.raises(ValueError, match="K=133"):
        draw_skeleton(np.zeros((10, 10, 3), np.uint8), np.zeros((1, 17, 3), np.float32))
    with pytest.raises(ValueError, match="RGB uint8"):
        draw_skeleton(np.zeros((10, 10), np.uint8), person())
