"""QA3: ground-truth coverage of the tracker's regions (scripted detections, real planner
and mask renderer): every pixel of each true face must be covered, or the frame failed closed."""

import cv2
import numpy as np
import pytest

from deid.anonymize.mask import MaskAnonymizer
from deid.config import MaskConfig, TrackConfig
from deid.track import Observation, Planner
from deid.types import Detections, FrameDecision


def _dets(boxes):
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Detections(b, np.full(len(b), 0.9, np.float32))


def _plans(detected, width, height, batch=8):
    """Plans from the real Planner for per-frame detector boxes (a person in every frame)."""
    obs = [Observation(i, _dets(b), person_present=True) for i, b in enumerate(detected)]
    planner, plans = Planner(TrackConfig(), width, height), []
    for s in range(0, len(obs), batch):
        planner.add(obs[s:s + batch])
        plans += planner.ready()
    return plans + planner.finish()


def _visible(plan, faces, width, height):
    """Pixels of the true face ellipses the mask leaves in clear (0 on a fail-closed frame)."""
    if plan.decision == FrameDecision.FAIL_CLOSED:
        return 0
    img = np.zeros((height, width, 3), np.uint8)
    for x1, y1, x2, y2 in faces:
        cv2.ellipse(img, (int((x1 + x2) / 2), int((y1 + y2) / 2)), (int((x2 - x1) / 2), int((y2 - y1) / 2)), 0, 0, 360,
                    (255, 255, 255), -1)
    out = MaskAnonymizer(MaskConfig(color=(0, 0, 0), shape="ellipse")).apply(img, plan.faces)
    return int((out[..., 0] == 255).sum())


@pytest.mark.parametrize("speed,missed", [(10, 8), (15, 4), (20, 3), (20, 15)])
def test_fast_face_missed_for_a_few_frames_stays_covered(speed, missed):
    # a 40x50 face walking across at a quarter to half its width a frame, missed by the
    # detector for a few frames (within max_gap): its track broke at the gap (the link gate
    # does not grow with the frames missed) and the two tracks' holds stayed where the face
    # was last and first seen, leaving it in clear between them
    W, H, n = 640, 160, 60
    truth = [[20 + 300 + speed * (i - 30), 50, 60 + 300 + speed * (i - 30), 100] for i in range(n)]
    gap = range(30 - missed // 2, 30 - missed // 2 + missed)
    plans = _plans([[] if i in gap else [truth[i]] for i in range(n)], W, H)
    leaks = {p.index: v for p in plans if (v := _visible(p, [truth[p.index]], W, H))}
    assert leaks == {}


@pytest.mark.parametrize("who", ["both", "one"])
def test_faces_crossing_while_missed_stay_covered(who):
    # two faces crossing (6 px a frame each) while the detector misses them for 10 frames:
    # each track was linked to the other face after the gap, so the interpolation ran
    # between the wrong boxes and the true paths were in clear
    W, H, n, v, fw, fh = 320, 120, 30, 6, 30, 38
    truths, detected = [], []
    for i in range(n):
        xa, xb = 160 - v * (15 - i) - fw / 2, 160 + v * (15 - i) - fw / 2
        a, b = [xa, 40, xa + fw, 40 + fh], [xb, 44, xb + fw, 44 + fh]
        truths.append([a, b])
        missed = 10 <= i < 20
        detected.append([f for k, f in enumerate((a, b)) if not (missed and (who == "both" or k == 0))])
    plans = _plans(detected, W, H)
    leaks = {p.index: v for p in plans if (v := _visible(p, truths[p.index], W, H))}
    assert leaks == {}


@pytest.mark.parametrize("speed", [3, 5])
def test_hold_follows_a_face_that_keeps_moving(speed):
    # a 40x50 face walking at 3-5 px a frame, detected for 10 frames only (a person in
    # every frame, nothing else found): the holds before and after stood still, and the
    # face walked out of them (a third of it in clear by the 8th held frame at 3 px)
    W, H, n = 640, 160, 60
    truth = [[200 + speed * (i - 20), 50, 240 + speed * (i - 20), 100] for i in range(n)]
    plans = _plans([[truth[i]] if 20 <= i < 30 else [] for i in range(n)], W, H)
    leaks = {p.index: v for p in plans if (v := _visible(p, [truth[p.index]], W, H))}
    assert leaks == {}
    assert [p.index for p in plans if p.decision == FrameDecision.FAIL_CLOSED] == [*range(4), *range(46, 60)]


def test_two_still_faces_found_now_and_then_are_not_bridged_across_the_frame():
    """Bridges follow a face's motion: a patient and a person in the background, each found
    only now and then (CenterFace's every 8th frame), are two still faces, not one that
    jumped between them. Bridged on distance alone, the pancake clip got masked strips
    across the kitchen between the cook and the person behind (14 % more of the frame
    covered); only the motion a face had when last seen may carry a bridge that far."""
    W, H, n = 480, 160, 48
    a, b = [60, 50, 100, 100], [300, 50, 340, 100]  # 240 px (5 head sizes) apart
    detected = [[a] if i % 8 == 0 else [b] if i % 8 == 4 else [] for i in range(n)]
    plans = _plans(detected, W, H)
    mid = (200, 75)  # half way: no face ever there
    crossing = [p.index for p in plans if any(f.box[0] <= mid[0] <= f.box[2] and f.box[1] <= mid[1] <= f.box[3]
                                              for f in p.faces)]
    assert crossing == []
    # and both faces stay covered throughout
    assert not {p.index for p in plans if _visible(p, [a, b], W, H)}


def test_a_box_at_infinity_or_nan_places_nothing_and_its_frame_fails_closed():
    """qa: a detector box with an infinite corner failed the whole video with an
    OverflowError ("unexpected") when it was drawn; such a box places nothing."""
    d = Detections(np.array([[10, 10, np.inf, 50], [5, 5, 20, 20], [np.nan, 1, 2, 3]], np.float32),
                   np.array([0.9, 0.8, 0.7], np.float32), landmarks=np.zeros((3, 5, 2), np.float32))
    assert d.boxes.tolist() == [[5, 5, 20, 20]] and d.scores.tolist() == [pytest.approx(0.8)] and d.landmarks.shape == (1, 5, 2)
    W, H = 160, 120
    face = [40, 30, 80, 80]
    plans = _plans([[face]] * 3 + [[[40, 30, np.inf, 80]]] * 40 + [[face]] * 3, W, H)
    assert all(not _visible(p, [face], W, H) for p in plans)
    assert any(p.decision == FrameDecision.FAIL_CLOSED for p in plans)  # beyond the holds: redacted whole


@pytest.mark.parametrize("stops", [True, False])
def test_a_hold_after_a_fast_diagonal_move_keeps_the_whole_face_in_its_ellipse(stops):
    """review: the moving hold was the union of the still and the moved box; the ellipse
    drawn in it left the corners of both out on a diagonal move (15 px a frame on a 40x50
    face: 5 px of a face that stopped in clear, which the still hold had covered)."""
    W, H, n, v = 640, 480, 60, 15
    pos = [min(i, 30) if stops else i for i in range(n)]
    truth = [[40 + v * (k - 20), 40 + v * (k - 20), 80 + v * (k - 20), 90 + v * (k - 20)] for k in pos]
    plans = _plans([[truth[i]] if 20 <= i < 30 else [] for i in range(n)], W, H)
    held = range(30, 46)  # the hold after the last detection
    leaks = {p.index: v for p in plans if p.index in held and (v := _visible(p, [truth[p.index]], W, H))}
    assert leaks == {}


def test_ellipses_cover_holds_each_ellipse():
    from deid.track.boxes import ellipses_cover

    a, b = np.array([0, 0, 40, 50], np.float32), np.array([60, 70, 100, 120], np.float32)
    c = ellipses_cover([a, b])
    cx, cy, hw, hh = (c[0] + c[2]) / 2, (c[1] + c[3]) / 2, (c[2] - c[0]) / 2, (c[3] - c[1]) / 2
    t = np.linspace(0, 2 * np.pi, 997)
    for box in (a, b):
        x = (box[0] + box[2]) / 2 + np.cos(t) * (box[2] - box[0]) / 2
        y = (box[1] + box[3]) / 2 + np.sin(t) * (box[3] - box[1]) / 2
        assert (((x - cx) / hw) ** 2 + ((y - cy) / hh) ** 2).max() <= 1.0
    assert np.allclose(ellipses_cover([a]), a, atol=0.2)  # one box: itself (and its margin)
