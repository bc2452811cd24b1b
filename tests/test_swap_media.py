"""The real thing on real media: dlib landmarks and identity, MediaPipe faces, the small
model trained briefly on talking_head_1 against talking_head_2 (Apache-2.0) as donor.

Slow (minutes of CPU training): run with ``pytest -m slow tests/test_swap_media.py``."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import media_path

pytestmark = [pytest.mark.media]


def test_dlib_landmarks_align_real_faces():
    from deid.config import Config
    from deid.detect import build_detector
    from deid.io import read_frames
    from deid.swap.align import DlibLandmarker, align, five_points, template, transform_points

    frames = read_frames(media_path("video/talking/talking_head_1.mp4"), [0, 50, 100])
    det = build_detector(Config())
    lm = DlibLandmarker()
    for f, d in zip(frames, det.detect(frames)):
        assert len(d) == 1
        pts = lm(f, [d.boxes[0]])[0]
        a = align(pts, 64)
        assert a.ok, a.why
        err = np.linalg.norm(transform_points(a.matrix, five_points(pts))[:3] - template(64)[:3], axis=1)
        assert err.max() < 0.08 * 64  # eyes and nose within 5 px of the template in a 64 px crop
        # MediaPipe's eyes agree with dlib's (the anonymizer's sanity check)
        assert np.linalg.norm(d.landmarks[0][:2] - five_points(pts)[:2], axis=1).max() < 0.35 * np.linalg.norm(pts[36:42].mean(0) - pts[42:48].mean(0))


@pytest.mark.slow
def test_swap_on_the_demo_clip_no_longer_matches_the_patient(tmp_path):
    """End to end: session (extract, train ~4 min from scratch), convert every frame with
    gating on every frame, then an independent dlib check (its own HOG boxes on the output
    and the detector's boxes) on the frames the swap was kept: no distance under 0.6."""
    from deid.config import Config
    from deid.io import read_frames
    from deid.registry import IDENTITY_ENCODERS
    from deid.swap.bench import detector_regions
    from deid.swap.donors import Consent, DonorLibrary
    from deid.swap.session import swap_session

    patient = media_path("video/talking/talking_head_1.mp4")
    donor_clip = media_path("video/talking/talking_head_2.mp4")
    lib = DonorLibrary(tmp_path / "donors")
    lib.add(
        "talking-head-2",
        [donor_clip],
        Consent.parse(
            "kind: public-test-material\nwho: talking_head_2.mp4 (SadTalker examples)\nscope: [face-swap-donor, testing]\n"
            "expires: never\nlicence: Apache-2.0\n"
        ),
        link=True,
    )
    cfg = Config().replace(
        "swap.donor=talking-head-2", "swap.max_minutes=4", "swap.gate_every=1", "swap.donor_pretrain_minutes=0", f"swap.workdir={tmp_path / 'work'}"
    )
    identity = IDENTITY_ENCODERS.create("dlib")
    frames = read_frames(patient)
    regions = detector_regions(frames, cfg)
    with swap_session([patient], cfg, identity=identity, library=lib) as anon:
        outs = [anon.apply(f, r) for f, r in zip(frames, regions)]
        stats = anon.stats()
    assert list((tmp_path / "work").iterdir()) == []  # the patient's model is gone
    with_face = [i for i, r in enumerate(regions) if r]
    assert stats["faces"] == len(frames)
    assert stats["faces_swapped"] >= 0.5 * len(frames), stats  # the swap works for most frames, not just the mask
    # independent check on every 5th frame that kept its swap (the mask frames are trivially safe)
    import dlib

    hog = dlib.get_frontal_face_detector()
    checked = 0
    for i in with_face[::5]:
        out = outs[i]
        face = regions[i][0].face_box
        if np.all(out[int((face[1] + face[3]) / 2), int((face[0] + face[2]) / 2)] == 0):
            continue  # masked by the gate
        boxes = [face] + [np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32) for r in hog(out, 1)]
        e_in = identity.embed([frames[i]], [np.stack(boxes[:1])])[0]
        e_out = identity.embed([out], [np.stack(boxes)])[0]
        d = identity.distance(e_in, e_out)
        assert np.nanmin(d) >= 0.6, (i, d)
        checked += 1
    assert checked >= 0.4 * len(with_face[::5])
