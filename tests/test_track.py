"""Tracking, gap filling, smoothing and fail-closed decisions (pure, no models)."""

import numpy as np
import pytest

from deid.config import TrackConfig
from deid.track import Observation, Planner, head_box_from_keypoints, pad_face_box, plan_window
from deid.track.boxes import box_iou
from deid.types import BoxSource, Detections, FrameDecision

W, H = 320, 240


def det(box, score=0.9):
    return Detections(np.asarray([box], np.float32), np.asarray([score], np.float32))


def moving_obs(n=40, miss=(), start=0, speed=2.0):
    obs = []
    for i in range(start, start + n):
        box = [50 + speed * i, 60, 90 + speed * i, 110]
        obs.append(Observation(i, Detections.empty() if i in miss else det(box), person_present=True))
    return obs


CFG = TrackConfig(smooth_window=1, hold_frames=3, max_gap=5, lookahead=8)


def covers(region_box, face_box):
    return region_box[0] <= face_box[0] + 1e-3 and region_box[1] <= face_box[1] + 1e-3 and region_box[2] >= face_box[2] - 1e-3 and region_box[3] >= face_box[3] - 1e-3


def test_pad_face_box_grows_to_head():
    b = pad_face_box(np.array([100, 100, 200, 220], np.float32), 0.3, 0.5, 0.25)
    assert np.allclose(b, [70, 40, 230, 250])


def test_short_gap_is_interpolated_and_covers_true_position():
    miss = {10, 11, 12}
    plans = plan_window(moving_obs(miss=miss), CFG, W, H)
    assert len(plans) == 40
    for i in miss:
        p = plans[i]
        assert p.decision == FrameDecision.OK and len(p.faces) == 1
        assert p.faces[0].source == BoxSource.INTERPOLATED
        truth = pad_face_box(np.array([50 + 2 * i, 60, 90 + 2 * i, 110], np.float32), CFG.pad_side, CFG.pad_top, CFG.pad_bottom)
        assert box_iou(p.faces[0].box[None], truth[None])[0, 0] > 0.8


def test_long_gap_with_person_present_fails_closed():
    miss = set(range(10, 25))  # 15 frames > max_gap + 2 * hold
    plans = plan_window(moving_obs(miss=miss), CFG, W, H)
    held = [i for i in miss if plans[i].faces]
    closed = [i for i in miss if plans[i].decision == FrameDecision.FAIL_CLOSED]
    assert set(held) | set(closed) == miss  # every missed frame is either covered or failed closed
    assert closed, "a long miss with a person present must fail closed"
    assert all(plans[i].faces[0].source == BoxSource.HELD for i in held)
    assert len(held) == 2 * CFG.hold_frames


def test_no_person_means_no_fail_closed():
    obs = [Observation(i) for i in range(10)]
    plans = plan_window(obs, CFG, W, H)
    assert all(p.decision == FrameDecision.OK and not p.faces and not p.person_present for p in plans)


def test_hold_before_first_detection():
    obs = [Observation(i, person_present=True) for i in range(5)] + moving_obs(n=10, start=5)
    plans = plan_window(obs, CFG, W, H)
    assert [bool(p.faces) for p in plans[:5]] == [False, False, True, True, True]
    assert plans[0].decision == FrameDecision.FAIL_CLOSED


def test_pose_boxes_fill_and_are_not_duplicated():
    obs = []
    for i in range(10):
        face = [100, 80, 140, 130]
        if i < 5:
            head = pad_face_box(np.array(face, np.float32), CFG.pad_side, CFG.pad_top, CFG.pad_bottom)
            obs.append(Observation(i, det(face), head_boxes=head[None]))  # overlapping pose box
        else:
            obs.append(Observation(i, head_boxes=np.array([[95, 50, 150, 140]], np.float32), pose_ran=True))
    plans = plan_window(obs, TrackConfig(smooth_window=1, hold_frames=0, max_gap=0, lookahead=3), W, H)
    assert all(len(p.faces) == 1 for p in plans)
    assert [p.faces[0].source for p in plans[5:]] == [BoxSource.POSE] * 5


def test_two_faces_two_tracks():
    obs = []
    for i in range(20):
        boxes = np.array([[20 + i, 50, 60 + i, 100], [220 - i, 60, 260 - i, 110]], np.float32)
        obs.append(Observation(i, Detections(boxes, np.array([0.9, 0.8], np.float32))))
    plans = plan_window(obs, CFG, W, H)
    ids = {f.track_id for p in plans for f in p.faces}
    assert len(ids) == 2 and all(len(p.faces) == 2 for p in plans)


def test_smoothing_never_uncovers_the_detection():
    rng = np.random.default_rng(0)
    obs = []
    truth = []
    for i in range(30):
        jitter = rng.normal(0, 4, 4)
        b = np.array([100, 80, 150, 140], np.float32) + jitter.astype(np.float32)
        truth.append(pad_face_box(b, 0.3, 0.55, 0.25))
        obs.append(Observation(i, det(b)))
    plans = plan_window(obs, TrackConfig(smooth_window=7, lookahead=24), W, H)
    for p, t in zip(plans, truth):
        assert covers(p.faces[0].box, np.clip(t, 0, [W, H, W, H]))


def test_boxes_are_clipped_to_frame_and_offscreen_dropped():
    obs = [Observation(0, det([-50, -60, 20, 10])), Observation(1, det([300, 200, 340, 260]))]
    plans = plan_window(obs, TrackConfig(hold_frames=0, max_gap=0, smooth_window=1, lookahead=3), W, H)
    b = plans[0].faces[0].box
    assert b[0] == 0 and b[1] == 0 and b[2] <= W and b[3] <= H


@pytest.mark.parametrize("chunk", [1, 7, 16])
def test_planner_windows_match_whole_run(chunk):
    cfg = TrackConfig(smooth_window=5, hold_frames=3, max_gap=5, lookahead=9)  # the minimum allowed
    obs = moving_obs(n=60, miss={7, 8, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 45})
    whole = plan_window(obs, cfg, W, H)
    pl = Planner(cfg, W, H)
    got = []
    for k in range(0, len(obs), chunk):
        pl.add(obs[k : k + chunk])
        got += pl.ready()
    got += pl.finish()
    assert [p.index for p in got] == list(range(60))
    for a, b in zip(got, whole):
        assert a.decision == b.decision
        assert len(a.faces) == len(b.faces)
        for fa, fb in zip(a.faces, b.faces):
            assert np.allclose(fa.box, fb.box, atol=1e-3) and fa.source == fb.source


def test_planner_rejects_out_of_order():
    pl = Planner(CFG, W, H)
    pl.add([Observation(3)])
    with pytest.raises(ValueError, match="frame order"):
        pl.add([Observation(2)])


def test_head_box_from_keypoints():
    kp = np.zeros((17, 3), np.float32)
    kp[0] = (100, 100, 0.9)  # nose
    kp[1] = (110, 92, 0.9)
    kp[2] = (90, 92, 0.9)
    kp[3] = (120, 96, 0.9)
    kp[4] = (80, 96, 0.9)
    b = head_box_from_keypoints(kp)
    assert b[0] < 80 and b[2] > 120 and b[1] < 80 and b[3] > 110
    # only shoulders: box above them
    kp2 = np.zeros((17, 3), np.float32)
    kp2[5] = (140, 200, 0.9)
    kp2[6] = (60, 200, 0.9)
    b2 = head_box_from_keypoints(kp2)
    assert b2[3] < 200 and b2[0] < 100 < b2[2]
    assert head_box_from_keypoints(np.zeros((17, 3), np.float32)) is None
    with pytest.raises(ValueError):
        head_box_from_keypoints(np.zeros((3, 3), np.float32))


def _covered(plan, face, w=640, h=480):
    m = np.zeros((h, w), bool)
    for r in plan.faces:
        x1, y1, x2, y2 = r.box.astype(int)
        m[max(0, y1):y2, max(0, x1):x2] = True
    x1, y1, x2, y2 = np.asarray(face, int)
    return m[y1:y2, x1:x2].mean()


@pytest.mark.parametrize("gap", [0, 15, 40])
def test_a_head_beside_a_found_face_is_kept(gap):
    """Person A's face is detected; person B stands right beside (faces 60 px wide,
    ``gap`` px between them) and only pose places B's head. B's head is not A's: it
    must keep its region, whether it comes beside a face or beside another pose head
    (a multi-person pose model), instead of being dropped as a duplicate."""
    cfg = TrackConfig()
    face_a = np.array([200, 150, 260, 225], np.float32)
    face_b = face_a + np.array([60 + gap, 0, 60 + gap, 0], np.float32)
    head_a, head_b = (pad_face_box(f, cfg.pad_side, cfg.pad_top, cfg.pad_bottom) for f in (face_a, face_b))
    obs = [Observation(i, det(face_a), head_boxes=head_b[None]) for i in range(5)]
    p = plan_window(obs, cfg, 640, 480)[2]
    assert len(p.faces) == 2 and _covered(p, face_b) == 1.0 and _covered(p, face_a) == 1.0
    obs2 = [Observation(i, head_boxes=np.stack([head_a, head_b])) for i in range(5)]
    p2 = plan_window(obs2, cfg, 640, 480)[2]
    assert len(p2.faces) == 2 and _covered(p2, face_b) == 1.0


def test_a_head_seen_lying_down_gets_a_whole_head_box():
    """A patient lying on their side, seen in profile: nose, eye and ear stack up
    vertically and one eye and ear are hidden. The box must still hold the whole head
    (~110 px), not a sliver sized from the points' small horizontal spread."""
    kp = np.zeros((17, 3), np.float32)
    kp[0] = (300, 200, 0.9)  # nose
    kp[1] = (305, 220, 0.9)  # near eye
    kp[3] = (310, 255, 0.9)  # near ear
    b = head_box_from_keypoints(kp)
    head = np.array([255, 190, 365, 300], np.float32)  # where the head is: ~110 px around nose..ear
    inter = max(0, min(b[2], head[2]) - max(b[0], head[0])) * max(0, min(b[3], head[3]) - max(b[1], head[1]))
    assert inter / ((head[2] - head[0]) * (head[3] - head[1])) > 0.8
