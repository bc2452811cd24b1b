"""Swap conversion: colour matching, pasting, one batched model call per frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deid.swap.align import align, crop_footprint
from deid.swap.convert import Converter, colour_transfer_lab, paste
from deid.swap.model import build_model
from deid.swap.spec import preset
from deid.swap.testing import SyntheticLandmarker
from deid.testing import draw_frame


def test_colour_transfer_matches_lab_mean_and_std_inside_the_mask():
    rng = np.random.default_rng(0)
    src = cv2.GaussianBlur(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), (0, 0), 3)
    ref = np.clip(src.astype(int) * 0.6 + np.array([60, 20, 0]), 0, 255).astype(np.uint8)
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 16:48] = 1.0
    out = colour_transfer_lab(src, ref, mask)
    lab = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2LAB).astype(np.float32)[16:48, 16:48].reshape(-1, 3)  # noqa: E731
    np.testing.assert_allclose(lab(out).mean(0), lab(ref).mean(0), atol=2.0)
    assert np.abs(lab(out).mean(0) - lab(src).mean(0)).max() > 5  # it did move
    with pytest.raises(ValueError):
        colour_transfer_lab(src, ref[:32], mask)


def _face():
    img, box = draw_frame(5, 10, 200, 160)
    pts = SyntheticLandmarker()(img, [box])[0]
    a = align(pts, 32)
    assert a.ok
    return img, a


def test_paste_touches_only_the_crop_footprint_and_respects_the_mask():
    img, a = _face()
    dst = img.copy()
    zero = paste(dst, np.full((32, 32, 3), 255, np.uint8), np.zeros((32, 32), np.float32), a.matrix)
    assert zero is not None and np.array_equal(dst, img)  # zero mask: nothing changes
    rect = paste(dst, np.full((32, 32, 3), 255, np.uint8), np.ones((32, 32), np.float32), a.matrix)
    assert rect == crop_footprint(a.matrix, 32, 200, 160)
    x1, y1, x2, y2 = rect
    outside = np.ones(dst.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(dst[outside], img[outside])
    assert (dst[y1:y2, x1:x2] == 255).all(axis=2).mean() > 0.4


def test_seamless_blend_also_stays_in_the_footprint():
    img, a = _face()
    dst = img.copy()
    rect = paste(dst, np.full((32, 32, 3), 200, np.uint8), np.pad(np.ones((24, 24), np.float32), 4), a.matrix, blend="seamless")
    x1, y1, x2, y2 = rect
    outside = np.ones(dst.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(dst[outside], img[outside])
    assert not np.array_equal(dst[y1:y2, x1:x2], img[y1:y2, x1:x2])


def test_converter_batches_faces_and_writes_into_dst():
    import torch

    torch.manual_seed(0)
    model = build_model(preset("tiny"))
    conv = Converter(model, colour="lab")
    img, a = _face()
    gen, mask = conv.generate(np.zeros((3, 32, 32, 3), np.uint8))
    assert gen.shape == (3, 32, 32, 3) and gen.dtype == np.uint8 and mask.shape == (3, 32, 32)
    dst = img.copy()
    rects = conv.convert(img, dst, [a, a])
    assert len(rects) == 2 and rects[0] == rects[1]
    assert not np.array_equal(dst, img)
    assert conv.convert(img, dst, []) == []


def test_unsharp_raises_edge_contrast_and_zero_is_identity():
    from deid.swap.convert import unsharp

    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 16:] = 200
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    assert unsharp(img, 0.0) is img
    sharp = unsharp(img, 1.0)
    grad = lambda im: np.abs(np.diff(im[16, :, 0].astype(int))).max()  # noqa: E731
    assert grad(sharp) > grad(img)
    assert abs(float(sharp.mean()) - float(img.mean())) < 3.0  # brightness kept
