"""Swap alignment: similarity fit, warp / un-warp round trip, masks, smoothing."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from deid.swap import align as A
from deid.swap.testing import synthetic_landmarks
from deid.track.boxes import pad_face_box


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]], np.float32)


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (12, 2)).astype(np.float32)
    m = _similarity(17.0, 0.6, 11.0, -4.0)
    dst = A.transform_points(m, src)
    est = A.umeyama(src, dst)
    np.testing.assert_allclose(est, m, atol=1e-4)
    # weights do not change an exact fit
    np.testing.assert_allclose(A.umeyama(src, dst, np.linspace(0.2, 1.0, 12)), m, atol=1e-4)


def test_umeyama_never_reflects():
    rng = np.random.default_rng(5)
    for _ in range(5):
        src = rng.uniform(0, 50, (6, 2)).astype(np.float32)
        mirrored = src * np.array([-1, 1], np.float32)
        m = A.umeyama(src, mirrored)
        assert np.linalg.det(m[:, :2]) >= 0  # a rotation + scale (possibly degenerate), never a mirror
        assert np.abs(A.transform_points(m, src) - mirrored).max() > 1.0  # so a mirror cannot fit exactly


def test_align_maps_landmarks_onto_the_template():
    pts = synthetic_landmarks(np.array([40, 30, 120, 130], np.float32))
    a = A.align(pts, 64)
    assert a.ok, a.why
    five_crop = A.transform_points(a.matrix, A.five_points(pts))
    # eyes land near the template eyes (the synthetic layout is not the ArcFace mean face)
    err = np.linalg.norm(five_crop[:2] - A.template(64)[:2], axis=1)
    assert err.max() < 0.08 * 64
    # inverse maps back
    back = A.transform_points(A.invert(a.matrix), five_crop)
    np.testing.assert_allclose(back, A.five_points(pts), atol=1e-3)


@pytest.mark.parametrize(
    "pts, why",
    [
        (np.full((68, 2), np.nan, np.float32), "no landmarks"),
        (synthetic_landmarks(np.array([10, 10, 14, 15], np.float32)), "too small"),
    ],
)
def test_align_refuses_unusable_landmarks(pts, why):
    a = A.align(pts, 64)
    assert not a.ok and why in a.why


def test_align_refuses_landmarks_that_are_not_a_face():
    rng = np.random.default_rng(3)
    junk = rng.uniform(0, 300, (68, 2)).astype(np.float32)
    junk[36:42] = (50, 50)
    junk[42:48] = (250, 60)
    junk[30] = (60, 280)  # nose far below and beside the eyes
    junk[48], junk[54] = (290, 10), (10, 290)
    a = A.align(junk, 64)
    assert not a.ok and a.why == f"landmarks do not fit a face (residual over {A.MAX_FIT_RESIDUAL:g} of the crop)"  # one key, not one a value


def test_warp_then_unwarp_recovers_the_crop_region():
    rng = np.random.default_rng(1)
    frame = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 2.0)
    m = _similarity(12.0, 64 / 90.0, 0, 0)
    m[:, 2] = 32 - A.transform_points(m, np.array([[160, 120]], np.float32))[0]  # crop centred on (160, 120)
    crop = A.warp(frame, m, 64)
    rect = A.crop_footprint(m, 64, 320, 240)
    assert rect is not None
    back = A.unwarp(crop, m, rect)
    cover = A.unwarp(np.ones((64, 64), np.float32), m, rect)
    x1, y1, x2, y2 = rect
    inner = cv2.erode((cover > 0.999).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert inner.sum() > 0.3 * (x2 - x1) * (y2 - y1)
    diff = np.abs(back.astype(np.int16) - frame[y1:y2, x1:x2].astype(np.int16))[inner]
    assert float(diff.mean()) < 6.0  # a down- then up-sampling of a smooth image
    # outside the crop's footprint nothing is produced
    assert np.all(back[~(cover > 0)] == 0)


def test_hull_mask_is_soft_and_covers_the_face_centre():
    pts = A.transform_points(A.align(synthetic_landmarks(np.array([40, 30, 120, 130], np.float32)), 64).matrix, synthetic_landmarks(np.array([40, 30, 120, 130], np.float32)))
    m = A.hull_mask(pts, 64)
    assert m.shape == (64, 64) and m.dtype == np.float32
    assert 0.0 <= m.min() and m.max() <= 1.0
    nose = pts[30].round().astype(int)
    assert m[nose[1], nose[0]] > 0.99
    assert m[0, 0] == 0.0
    assert ((m > 0.01) & (m < 0.99)).any()  # feathered rim


def test_face_box_from_head_inverts_the_tracker_padding():
    face = np.array([100, 80, 180, 190], np.float32)
    head = pad_face_box(face, 0.3, 0.55, 0.25)
    np.testing.assert_allclose(A.face_box_from_head(head, 0.3, 0.55, 0.25), face, atol=1e-3)


def test_one_euro_removes_jitter_but_follows_motion():
    rng = np.random.default_rng(2)
    f = A.OneEuro(min_cutoff=1.0, beta=0.5)
    still = [f(np.array([50.0, 50.0]) + rng.normal(0, 1.0, 2), 1 / 30, scale=20.0) for _ in range(60)]
    assert np.std(np.array(still[20:]), axis=0).max() < 0.5  # raw jitter std is 1.0
    # a fast move is followed within a few frames
    f2 = A.OneEuro(min_cutoff=1.0, beta=0.5)
    for _ in range(10):
        f2(np.array([0.0, 0.0]), 1 / 30, scale=20.0)
    ys = [f2(np.array([40.0, 0.0]), 1 / 30, scale=20.0) for _ in range(15)]
    assert ys[-1][0] > 36.0


def test_one_euro_off_passes_values_through():
    f = A.OneEuro(min_cutoff=0.0)
    for v in ([1.0], [5.0], [-3.0]):
        assert f(np.array(v), 1 / 30)[0] == v[0]


def test_build_landmarker_rejects_unknown_names():
    from deid.errors import ConfigError

    with pytest.raises(ConfigError, match="swap.landmarks"):
        A.build_landmarker("nope")
