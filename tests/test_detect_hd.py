"""A mid-sized face shown briefly in an HD frame: BlazeFace sees the whole frame at
128-192 px, so a 53 px face in 1080p is a few pixels to it; CenterFace on every 8th frame
missed a face shown for 7 frames between its runs, and the clip was published with the
face in clear (leak audit: 0 faces found). On frames larger than detect.max_side the
extra detector now runs on every frame."""

import cv2
import numpy as np
import pytest

from conftest import media_path
from deid.config import Config
from deid.detect.base import CompositeDetector
from deid.testing import ColorFaceDetector, draw_frame


def test_extra_detectors_run_on_every_frame_of_a_large_video():
    a, b = ColorFaceDetector(), ColorFaceDetector()
    comp = CompositeDetector([(a, 1), (b, 8)], large=(640, 1))
    small = [draw_frame(i, 16, 160, 120)[0] for i in range(16)]
    comp.detect(small)
    assert b.calls == 2  # frames 0 and 8
    comp.reset()
    big = [cv2.resize(f, (1280, 960)) for f in small]
    comp.detect(big)
    assert b.calls == 2 + 16
    assert CompositeDetector([(a, 1), (b, 8)], large=(640, 0)).large is None  # 0: off
    comp16 = CompositeDetector([(a, 1), (b, 4)], large=(640, 8))  # never less often than its own cadence
    b.calls = 0
    comp16.detect(big)
    assert b.calls == 4


def _popin(tmp_path):
    """1920x1080, 16 frames; a real face (~53 px wide) on frames 9-15 only."""
    from deid.io import VideoWriter

    img = cv2.cvtColor(cv2.imread(str(media_path("faces/obama.jpg"))), cv2.COLOR_BGR2RGB)
    import dlib

    d = dlib.get_frontal_face_detector()(img, 1)[0]
    fw = d.right() - d.left()
    x0, y0 = max(0, d.left() - fw // 2), max(0, d.top() - int(fw * 0.7))
    crop = img[y0:min(img.shape[0], d.bottom() + fw // 2), x0:min(img.shape[1], d.right() + fw // 2)]
    crop = cv2.resize(crop, (100, int(round(crop.shape[0] * 100 / crop.shape[1]))), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    path = tmp_path / "popin.mp4"
    with VideoWriter(path, 1920, 1080, 25.0) as w:
        for t in range(16):
            f = np.clip(np.full((1080, 1920, 3), (120, 140, 130), np.int16) + rng.integers(-15, 15, (1080, 1920, 3)), 0, 255)
            f = f.astype(np.uint8)
            if t >= 9:
                f[400:400 + crop.shape[0], 1300:1400] = crop
            w.write(f)
    return path, (1300, 400, 1400, 400 + crop.shape[0])


@pytest.mark.parametrize("large_every,covered", [(1, True), (0, False)])
def test_a_brief_mid_sized_face_in_hd_is_covered(tmp_path, large_every, covered):
    """With the default (1) every frame showing the face has a region over it; with the
    rule off (0: extra_every 8 everywhere) frames 9-15 fall between CenterFace's runs and
    BlazeFace finds nothing — the test shows the rule is what covers them."""
    from deid.pipeline import Components, process_video

    path, (x0, y0, x1, y1) = _popin(tmp_path)
    cfg = Config().replace("audit.leak_check=false", f"detect.extra_every_large={large_every or 8}")
    r = process_video(path, tmp_path / "out", ["blur"], cfg, components=Components.build(cfg, ["blur"]), keep_plans=True)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hit = [any(f.box[0] <= cx <= f.box[2] and f.box[1] <= cy <= f.box[3] for f in p.faces) for p in r.plans[9:16]]
    assert all(hit) == covered, hit


def test_the_leak_audit_finds_the_face_the_detectors_missed_in_hd(tmp_path):
    """With the rule off the detectors miss the face; the audit's detector, at 960 px,
    found no face either and the output was published. At audit.max_side 1920 (1080p
    whole) it finds the face in clear and stops publication."""
    from deid.pipeline import Components, process_video

    path, _ = _popin(tmp_path)
    cfg = Config().replace("detect.extra_every_large=8", "audit.sample_frames=0", "audit.risk_frames=0",
                           "audit.text_check=false")
    r = process_video(path, tmp_path / "out", ["blur"], cfg, components=Components.build(cfg, ["blur"]))
    assert r.status == "failed" and "leak" in r.error.lower(), r.error
    assert not list((tmp_path / "out").glob("*.mp4"))
