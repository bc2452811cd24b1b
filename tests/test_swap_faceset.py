"""Face-set quality filtering and person selection (pure functions, fake inputs)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deid.errors import InvalidInputError
from deid.swap.faceset import ExtractStats, _Cand, _drop_blurred, _keep_main_person, list_media, sharpness, yaw_ratio
from deid.swap.testing import synthetic_landmarks


class _VecIdentity:
    dim = 2
    threshold = 0.6

    def distance(self, a, b):
        return np.linalg.norm(np.asarray(a)[:, None] - np.asarray(b)[None], axis=2)


def _cand(index: int, emb=None, box=(0, 0, 10, 10), n: int = 2, crop=None) -> _Cand:
    crop = crop if crop is not None else np.zeros((8, 8, 3), np.uint8)
    return _Cand(0, index, crop, np.zeros((68, 2)), np.eye(2, 3), np.asarray(box, np.float32), n, None if emb is None else np.asarray(emb, np.float32))


def test_main_person_is_the_largest_identity_cluster():
    a, b = [0.0, 0.0], [5.0, 5.0]
    cands = [_cand(0, a), _cand(0, b), _cand(1, a), _cand(1, b), _cand(2, a), _cand(3, [0.1, 0.0], n=1)]
    stats = ExtractStats()
    kept = _keep_main_person(cands, _VecIdentity(), stats)
    assert [c.index for c in kept] == [0, 1, 2, 3]
    assert all(np.linalg.norm(c.emb) < 1 for c in kept)
    assert stats.rejected["other_person"] == 2


def test_unembedded_faces_where_the_main_person_is_are_kept():
    """A face dlib could not embed (emb None) stays in the set when it sits where the main
    person's face sits a few frames away; one elsewhere (the other person's place) goes."""
    a, b = [0.0, 0.0], [5.0, 5.0]
    left, right = (0, 0, 10, 10), (50, 0, 60, 10)
    cands = [_cand(0, a, left), _cand(0, b, right), _cand(1, a, left), _cand(2, a, left), _cand(3, b, right, n=1),
             _cand(4, None, (1, 0, 11, 10), n=1), _cand(5, None, right, n=1), _cand(60, None, left, n=1)]
    stats = ExtractStats()
    kept = _keep_main_person(cands, _VecIdentity(), stats)
    assert [c.index for c in kept] == [0, 1, 2, 4]
    assert stats.rejected["other_person"] == 4


def test_without_identity_the_biggest_face_of_each_frame_is_kept():
    cands = [_cand(0, box=(0, 0, 10, 10)), _cand(0, box=(0, 0, 30, 30)), _cand(1, box=(0, 0, 20, 20), n=1)]
    stats = ExtractStats()
    kept = _keep_main_person(cands, None, stats)
    assert [(c.index, float(c.box[2])) for c in kept] == [(0, 30.0), (1, 20.0)]
    assert stats.rejected["other_person"] == 1


def test_single_person_videos_are_left_alone():
    cands = [_cand(i, n=1) for i in range(4)]
    assert _keep_main_person(cands, None, ExtractStats()) == cands


def test_blurred_faces_are_dropped_relative_to_the_set():
    rng = np.random.default_rng(0)
    sharp = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(5)]
    blurred = cv2.GaussianBlur(sharp[0], (0, 0), 3.0)
    assert sharpness(blurred) < 0.1 * sharpness(sharp[0])
    cands = [_cand(i, n=1, crop=c) for i, c in enumerate(sharp + [blurred])]
    stats = ExtractStats()
    kept = _drop_blurred(cands, 0.3, stats)
    assert len(kept) == 5 and stats.rejected["blur"] == 1


def test_yaw_ratio_is_zero_for_a_frontal_layout_and_large_for_a_profile():
    pts = synthetic_landmarks(np.array([0, 0, 100, 120], np.float32))
    assert abs(yaw_ratio(pts)) < 0.05
    turned = pts.copy()
    turned[30, 0] = pts[16, 0] - 5  # nose next to one end of the jaw
    assert yaw_ratio(turned) > 0.7  # well past the filter's 0.5


def test_list_media_expands_folders_and_rejects_missing(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_media([tmp_path])] == ["a.png"]
    with pytest.raises(InvalidInputError, match="no such file"):
        list_media([tmp_path / "missing.mp4"])
    (tmp_path / "a.png").unlink()
    with pytest.raises(InvalidInputError, match="no images or videos"):
        list_media([tmp_path])
