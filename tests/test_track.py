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


def test_uncut_face_box_restores_a_face_cut_by_the_frame_edge():
    from deid.track.boxes import CUT_FACE_ASPECT, uncut_face_box

    inside = np.array([100, 50, 160, 125], np.float32)
    assert np.array_equal(uncut_face_box(inside, W, H), inside)
    # cut by the top edge: the height grows upwards (outside the frame) to aspect x width
    top = uncut_face_box(np.array([100, 0, 160, 40], np.float32), W, H)
    assert np.allclose(top, [100, 40 - CUT_FACE_ASPECT * 60, 160, 40])
    # by the bottom edge: downwards
    bottom = uncut_face_box(np.array([100, 200, 160, H], np.float32), W, H)
    assert np.allclose(bottom, [100, 200, 160, 200 + CUT_FACE_ASPECT * 60])
    # by the left / right edge: the width grows outwards to the height
    assert np.allclose(uncut_face_box(np.array([0, 100, 30, 160], np.float32), W, H), [-30, 100, 30, 160])
    assert np.allclose(uncut_face_box(np.array([290, 100, W, 160], np.float32), W, H), [290, 100, 350, 160])
    # a face box already taller than the rule is not shrunk; nor is one spanning the frame
    tall = np.array([100, 0, 130, 80], np.float32)
    assert np.array_equal(uncut_face_box(tall, W, H), tall)
    span = np.array([0, 0, W, H], np.float32)
    assert np.array_equal(uncut_face_box(span, W, H), span)


def test_head_region_of_a_face_cut_by_the_top_edge_is_padded_from_the_whole_face():
    # the visible 40 px of a 75 px face: the chin's pad (pad_bottom x face height) must
    # come from the whole face, not from the 40 px the frame shows
    cfg = TrackConfig(smooth_window=1, hold_frames=3, max_gap=5, lookahead=8)
    cut = [100, 0, 160, 40]
    plans = plan_window([Observation(i, det(cut), person_present=True) for i in range(5)], cfg, W, H)
    whole_h = 1.25 * 60
    for p in plans:
        (r,) = p.faces
        assert r.box[1] == 0 and r.box[3] >= 40 + cfg.pad_bottom * whole_h - 1e-3
        assert r.full_box is not None and r.full_box[1] < 0  # the shape follows the whole head
    # a face cut at the left edge: the far side's pad comes from the whole width
    side = [0, 100, 30, 160]
    plans = plan_window([Observation(i, det(side), person_present=True) for i in range(5)], cfg, W, H)
    assert all(p.faces[0].box[2] >= 30 + cfg.pad_side * 60 - 1e-3 for p in plans)
    # a face inside the frame is padded as before
    inner = np.array([100, 60, 160, 120], np.float32)
    plans = plan_window([Observation(i, det(inner), person_present=True) for i in range(5)], cfg, W, H)
    assert np.allclose(plans[2].faces[0].box, pad_face_box(inner, cfg.pad_side, cfg.pad_top, cfg.pad_bottom))


def test_covering_box_contains_the_inner_ellipse_and_never_shrinks():
    from deid.track.boxes import covering_box

    inner = np.array([82, -22, 178, 50], np.float32)  # a head padded from a face cut at the top
    grown = np.array([82, -76.25, 178, 58.75], np.float32)  # the same face's whole head: centre moved up
    out = covering_box(grown, inner)
    assert out[0] <= grown[0] and out[1] <= grown[1] and out[2] >= grown[2] and out[3] >= grown[3]
    t = np.linspace(0, 2 * np.pi, 720)
    x = 130 + 48 * np.cos(t)
    y = 14 + 36 * np.sin(t)
    cx, cy, a, b = (out[0] + out[2]) / 2, (out[1] + out[3]) / 2, (out[2] - out[0]) / 2, (out[3] - out[1]) / 2
    assert (((x - cx) / a) ** 2 + ((y - cy) / b) ** 2).max() <= 1.0 + 1e-6
    # without the scaling the grown ellipse misses part of the inner one (the rows near its centre)
    cx, cy, a, b = 130, -8.75, 48, 67.5
    assert (((x - cx) / a) ** 2 + ((y - cy) / b) ** 2).max() > 1.1
    # an ellipse already inside: unchanged
    assert np.array_equal(covering_box(grown, np.array([100, -50, 160, 40], np.float32)), grown)


@pytest.mark.parametrize("face", [[270, 0, 370, 60], [0, 200, 50, 300], [270, 430, 370, 480], [600, 200, 640, 300], [0, 0, 60, 50]],
                         ids=["top", "left", "bottom", "right", "corner"])
def test_edge_cut_head_region_hides_everything_the_directly_padded_one_did(face):
    """The grown head region of a face cut by the frame edge is drawn (ellipse, as blur
    and mask do) over every pixel the head padded from the visible part covered, and
    more: growing the box moves the ellipse's centre past the edge, which alone would
    narrow it on the rows near the old centre."""
    from deid.anonymize.base import RegionAnonymizer
    from deid.track.boxes import clip
    from deid.types import FaceRegion

    class Black(RegionAnonymizer):
        shape = "ellipse"

        def _render(self, patch, full):
            return np.zeros_like(patch)

    w, h = 640, 480
    cfg = TrackConfig(smooth_window=1)
    fb = np.asarray(face, np.float32)
    plans = plan_window([Observation(i, det(fb), person_present=True) for i in range(3)], cfg, w, h)
    direct = pad_face_box(fb, cfg.pad_side, cfg.pad_top, cfg.pad_bottom)
    old = FaceRegion(box=clip(direct, w, h), full_box=direct)

    def hidden(faces):
        return Black().apply(np.full((h, w, 3), 255, np.uint8), list(faces))[..., 0] == 0

    new, before = hidden(plans[1].faces), hidden([old])
    assert not (before & ~new).any()
    assert new.sum() > before.sum()


def test_pose_head_beside_an_edge_cut_face_is_judged_against_the_directly_padded_head():
    # this pose head is not the face's own head by the analyzer's rule (the face's head
    # padded from the visible part); the grown head (larger, centred past the edge) must
    # not make the tracker drop it
    w, h = 640, 480
    cfg = TrackConfig(smooth_window=1)
    face = np.asarray([270, 0, 370, 60], np.float32)
    head = np.asarray([[250, -200, 390, 40]], np.float32)
    plans = plan_window([Observation(i, det(face), head_boxes=head, person_present=True) for i in range(3)], cfg, w, h)
    assert sorted(r.source for r in plans[1].faces) == sorted([BoxSource.DETECTED, BoxSource.POSE])
