"""Contract tests every anonymizer passes, plus behaviour of each."""

import numpy as np
import pytest

from deid.anonymize import build_anonymizer, redact_frame
from deid.anonymize.base import soft_mask
from deid.config import BlurConfig, Config
from deid.types import FaceRegion

METHODS = ["blur", "pixelate", "mask"]


def textured(h=120, w=160, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(params=METHODS)
def anon(request):
    return build_anonymizer(request.param, Config())


def test_contract_shape_dtype_no_inplace(anon):
    f = textured()
    before = f.copy()
    out = anon.apply(f, [FaceRegion(np.array([40, 30, 100, 100], np.float32))])
    assert out.shape == f.shape and out.dtype == np.uint8
    assert np.array_equal(f, before), "must not edit the input frame"
    assert out is not f


def test_contract_no_faces_is_identity(anon):
    f = textured()
    assert np.array_equal(anon.apply(f, []), f)


def test_contract_only_region_changes(anon):
    f = textured()
    out = anon.apply(f, [FaceRegion(np.array([40, 30, 100, 100], np.float32))])
    outside = np.ones(f.shape[:2], bool)
    outside[30:100, 40:100] = False
    assert np.array_equal(out[outside], f[outside])
    centre = (slice(50, 80), slice(55, 85))
    assert np.abs(out[centre].astype(int) - f[centre].astype(int)).mean() > 30


def test_contract_edge_and_degenerate_regions(anon):
    f = textured()
    regions = [
        FaceRegion(np.array([-30, -30, 20, 20], np.float32)),  # partly outside
        FaceRegion(np.array([150, 110, 400, 400], np.float32)),
        FaceRegion(np.array([500, 500, 600, 600], np.float32)),  # entirely outside
        FaceRegion(np.array([10, 10, 10.2, 10.2], np.float32)),  # sub-pixel
    ]
    out = anon.apply(f, regions)
    assert out.shape == f.shape


def test_contract_a_head_cut_by_the_frame_edge_is_covered_up_to_the_edge(anon):
    # the head's box reaches 60 px above the frame: the ellipse is laid out on the whole
    # head, so the rows at the top edge (its middle) are covered almost across its width;
    # laid out on the visible part, it narrowed to a point there (eyes left visible)
    f = textured()
    full = np.array([40, -60, 120, 60], np.float32)
    visible = np.array([40, 0, 120, 60], np.float32)
    out = anon.apply(f, [FaceRegion(visible, full_box=full)])
    changed = np.abs(out.astype(int) - f.astype(int)).sum(axis=2) > 0
    assert changed[0:6, 44:116].mean() > 0.9, changed[0:6, 44:116].mean()
    assert not changed[:, :38].any() and not changed[:, 122:].any() and not changed[62:].any()
    # and from the tracker: a region clipped by the frame carries its whole box
    from deid.config import TrackConfig
    from deid.track import Observation, plan_window
    from deid.types import Detections

    det = Detections(np.array([[60, -20, 100, 20]], np.float32), np.array([0.9], np.float32))
    (plan,) = plan_window([Observation(0, det, person_present=True)], TrackConfig(), 160, 120)
    (region,) = plan.faces
    assert region.box[1] == 0 and region.full_box is not None and region.full_box[1] < 0


def test_contract_rejects_bad_frames(anon):
    with pytest.raises(ValueError):
        anon.apply(np.zeros((10, 10), np.uint8), [])
    with pytest.raises(ValueError):
        anon.apply(np.zeros((10, 10, 3), np.float32), [])


def test_mask_is_solid_in_interior():
    m = build_anonymizer("mask", Config().replace("anonymize.mask.color=[10,20,30]"))
    out = m.apply(textured(), [FaceRegion(np.array([40, 30, 100, 100], np.float32))])
    assert (out[55:75, 60:80] == [10, 20, 30]).all()


def test_pixelate_makes_blocks():
    p = build_anonymizer("pixelate", Config().replace("anonymize.pixelate.blocks=4"))
    out = p.apply(textured(), [FaceRegion(np.array([0, 0, 80, 80], np.float32))])
    block = out[2:18, 2:18].reshape(-1, 3)
    assert (block == block[0]).all()


def detail(img):
    g = img.astype(np.float32).mean(axis=2)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def test_blur_strength_is_monotone_and_scales_with_size():
    f = textured(240, 320)
    d = []
    for s in (0.02, 0.06, 0.2):
        b = build_anonymizer("blur", Config().replace(f"anonymize.blur.strength={s}"))
        out = b.apply(f, [FaceRegion(np.array([60, 40, 260, 220], np.float32))])
        d.append(detail(out[90:170, 120:200]))
    assert d[0] > d[1] > d[2]
    # relative blur: a big and a small region end equally featureless (relative to size)
    b = build_anonymizer("blur", Config())
    big = b.apply(f, [FaceRegion(np.array([0, 0, 320, 240], np.float32))])
    assert detail(big[80:160, 110:210]) < 0.1 * detail(f)


def test_soft_mask_interior_full_and_rim_soft():
    m = soft_mask(100, 80, "ellipse", 0.12)[:, :, 0]
    assert m[40, 50] == 1.0 and m[0, 0] == 0.0
    assert 0.0 < m[40, 3] < 1.0
    assert soft_mask(100, 80, "box", 0.0).min() == 1.0


def test_redact_frame():
    r = redact_frame(textured())
    assert (r == 128).all()


def test_blur_config_validation():
    from deid.errors import ConfigError

    with pytest.raises(ConfigError):
        BlurConfig(strength=0)


def test_mask_cache_is_bounded_by_bytes():
    """Regions change size every frame; on large frames the cached masks must not pile up."""
    from deid.anonymize.base import hard_mask

    for k in range(60):
        m = soft_mask(1500 + k, 2000, "ellipse", 0.12)  # ~12 MB each
        assert m.shape == (2000, 1500 + k, 1) and not m.flags.writeable
        hard_mask(1500 + k, 2000, "ellipse")
    assert soft_mask.cache_bytes() <= 64 << 20 and hard_mask.cache_bytes() <= 32 << 20
    assert soft_mask(100, 80, "ellipse", 0.12) is soft_mask(100, 80, "ellipse", 0.12)  # small ones are reused


def test_blur_kernel_matches_opencv_gaussian_blur():
    """The blur filters with a cached float kernel (sepFilter2D) instead of
    cv2.GaussianBlur's slow fixed-point uint8 path: the same image to within 2 grey levels."""
    import cv2

    from deid.anonymize.blur import _kernel

    rng = np.random.default_rng(1)
    worst = 0
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(2, 33, 2))
        sigma = round(float(rng.uniform(0.5, 12)), 2)
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        ref = cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT).astype(int)
        k = _kernel(sigma)
        got = cv2.sepFilter2D(img, -1, k, k, borderType=cv2.BORDER_REFLECT).astype(int)
        worst = max(worst, int(np.abs(ref - got).max()))
    assert worst <= 2
