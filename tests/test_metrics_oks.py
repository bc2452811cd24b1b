"""COCO keypoint AP / OKS of processed vs original poses (deid.metrics.oks)."""

from __future__ import annotations

import numpy as np
import pytest

from deid.errors import InvalidInputError
from deid.metrics.oks import evaluate_pose, person_area
from deid.pose import schema

K = schema.NUM_KEYPOINTS
GROUPS = ("overall", "body", "head", "face", "hands", "feet")


def make_person(rng, cx, cy, scale=100.0, score=0.9):
    """One wholebody133 person: points spread over a (2 scale) x (4 scale) box."""
    p = np.zeros((K, 3))
    p[:, 0] = cx + rng.uniform(-scale, scale, K)
    p[:, 1] = cy + rng.uniform(-2 * scale, 2 * scale, K)
    p[:, 2] = score
    return p


@pytest.fixture(scope="module")
def clip():
    """20 frames, two people; no hands in the first 5 frames, nobody in frame 7."""
    rng = np.random.default_rng(0)
    frames = []
    for f in range(20):
        a = np.stack([make_person(rng, 200, 300), make_person(rng, 600, 320, scale=80)])
        if f < 5:
            a[:, list(schema.GROUPS["hands"]), 2] = 0.0
        frames.append(a)
    frames[7] = np.zeros((0, K, 3))
    return frames


def jitter(frames, sd, idx=None, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for a in frames:
        b = a.copy()
        sel = slice(None) if idx is None else list(idx)
        b[:, sel, :2] += rng.normal(0, sd, b[:, sel, :2].shape)
        out.append(b)
    return out


def test_original_against_itself_is_perfect_in_every_group(clip):
    ev = evaluate_pose(clip, clip)
    for g in GROUPS:
        assert ev.ap[g] == pytest.approx(1.0), g
        assert ev.ap50[g] == pytest.approx(1.0) and ev.ap75[g] == pytest.approx(1.0)
    assert ev.num_gt["overall"] == 19 * 2
    assert ev.num_gt["hands"] == 14 * 2  # persons without visible hands are ignored there
    assert np.isnan(ev.frame_oks["overall"][7])  # nobody in the original
    np.testing.assert_allclose(np.delete(ev.frame_oks["overall"], 7), 1.0)
    assert np.isnan(ev.frame_oks["hands"][:5]).all()
    np.testing.assert_allclose(ev.keypoint_error, 0.0, atol=1e-9)
    np.testing.assert_allclose(ev.keypoint_missing, 0.0)


def direct_oks(gt, det, sigmas, vis_threshold=0.3):
    """The OKS formula written out: mean over visible GT points of
    exp(-d^2 / (2 s^2 k^2)), s^2 = area of the visible points' box, k = 2 sigma."""
    vis = gt[:, 2] >= vis_threshold
    xy = gt[vis, :2]
    area = np.ptp(xy[:, 0]) * np.ptp(xy[:, 1])
    d2 = ((det[:, :2] - gt[:, :2]) ** 2).sum(axis=1)
    k = 2.0 * np.asarray(sigmas)
    return float(np.mean(np.exp(-d2[vis] / (2.0 * area * k[vis] ** 2))))


def test_known_case_matches_the_formula_by_hand():
    # 5 keypoints on a 100 x 200 box, custom sigmas: checks the wiring into COCOeval
    # (sigma scaling, area, visibility) rather than any particular schema.
    sig = np.array([0.05, 0.08, 0.1, 0.05, 0.12])
    gt = np.array([[100, 100, 0.9], [200, 100, 0.9], [150, 200, 0.9], [100, 300, 0.9], [200, 300, 0.1]], float)
    det = gt.copy()
    det[:, 2] = 0.8
    det[0, :2] += (6, 0)
    det[1, :2] += (0, -9)
    det[2, :2] += (5, 5)
    det[3, :2] += (-3, 4)
    det[4, :2] += (50, 50)  # not visible in GT: must not count
    expected = direct_oks(gt, det, sig)
    # by hand: area = 100 * 200; e.g. point 0: exp(-36 / (2 * 20000 * 0.01)) = exp(-0.09)
    assert person_area(gt, 0.3) == pytest.approx(100 * 200)
    assert np.exp(-36 / (2 * 20000 * (2 * 0.05) ** 2)) == pytest.approx(np.exp(-0.09))
    ev = evaluate_pose([gt[None]], [det[None]], sigmas=sig, groups={"all": range(5), "first": [0, 1]})
    got = ev.person_oks["all"][0][0]
    assert got == pytest.approx(expected, rel=1e-9)
    assert 0.5 < got < 0.95
    # one GT, one detection: precision is 1 at every OKS threshold the match passes
    thresholds = np.linspace(0.5, 0.95, 10)
    assert ev.ap["all"] == pytest.approx(np.mean(thresholds <= got))
    # a group is scored on its own keypoints and sigmas, with the person's full area
    by_hand = np.mean([np.exp(-36 / (2 * 20000 * (2 * 0.05) ** 2)), np.exp(-81 / (2 * 20000 * (2 * 0.08) ** 2))])
    assert ev.person_oks["first"][0][0] == pytest.approx(by_hand, rel=1e-9)
    # normalised error of keypoint 0 = 6 px / sqrt(area)
    assert ev.keypoint_error[0] == pytest.approx(6 / np.sqrt(20000))
    assert np.isnan(ev.keypoint_error[4]) and np.isnan(ev.keypoint_missing[4])


def test_ap_drops_as_jitter_grows(clip):
    aps = [evaluate_pose(clip, jitter(clip, sd)).ap["overall"] for sd in (0.0, 2.0, 6.0, 20.0)]
    assert aps[0] == pytest.approx(1.0)
    assert aps[0] > aps[1] > aps[2] > aps[3]
    assert aps[3] < 0.2
    oks = [np.nanmean(evaluate_pose(clip, jitter(clip, sd)).frame_oks["overall"]) for sd in (2.0, 20.0)]
    assert oks[0] > oks[1]


def test_region_isolation_hands_only(clip):
    hands = schema.GROUPS["hands"]
    ev = evaluate_pose(clip, jitter(clip, 8.0, idx=hands))
    assert ev.ap["hands"] < 0.7
    for g in ("body", "head", "face", "feet"):
        assert ev.ap[g] == pytest.approx(1.0), g
    assert ev.ap["overall"] < 1.0
    err = ev.keypoint_error
    assert np.all(err[list(hands)] > 0) and np.allclose(np.delete(err, list(hands)), 0.0)


def test_processed_without_people_scores_zero(clip):
    ev = evaluate_pose(clip, [np.zeros((0, K, 3)) for _ in clip])
    for g in GROUPS:
        assert ev.ap[g] == 0.0
    assert np.isnan(ev.frame_oks["overall"][7])
    np.testing.assert_array_equal(np.delete(ev.frame_oks["overall"], 7), 0.0)
    np.testing.assert_allclose(ev.keypoint_missing, 1.0)


def test_lost_keypoints_count_as_errors(clip):
    proc = [a.copy() for a in clip]
    face = list(schema.GROUPS["face"])
    for a in proc:
        a[:, face, 2] = 0.0  # the estimator lost the face after de-identification
    ev = evaluate_pose(clip, proc)
    assert ev.ap["face"] == 0.0
    assert ev.ap["body"] == pytest.approx(1.0)
    np.testing.assert_allclose(ev.keypoint_missing[face], 1.0)
    assert ev.ap["overall"] < 1.0


def test_false_positive_with_high_score_lowers_ap(clip):
    rng = np.random.default_rng(5)
    proc = []
    for a in clip:
        extra = make_person(rng, 1500, 300, score=1.0)[None]  # nobody there in the original
        proc.append(np.concatenate([a, extra]) if len(a) else extra)
    assert evaluate_pose(clip, proc).ap["overall"] < 0.9


def test_group_without_ground_truth_is_nan():
    rng = np.random.default_rng(2)
    frames = [make_person(rng, 200, 300)[None] for _ in range(3)]
    for a in frames:
        a[:, list(schema.GROUPS["hands"]), 2] = 0.1  # below the visibility threshold
    ev = evaluate_pose(frames, frames)
    assert np.isnan(ev.ap["hands"]) and ev.num_gt["hands"] == 0
    assert ev.ap["body"] == pytest.approx(1.0)
    empty = [np.zeros((0, K, 3))] * 3
    ev = evaluate_pose(empty, frames)
    assert all(np.isnan(ev.ap[g]) for g in GROUPS)
    assert np.isnan(ev.frame_oks["overall"]).all()


def test_input_errors():
    rng = np.random.default_rng(3)
    a = [make_person(rng, 100, 100)[None]]
    with pytest.raises(InvalidInputError, match="frames"):
        evaluate_pose(a, a + a)
    with pytest.raises(InvalidInputError, match="expected 133"):
        evaluate_pose(a, [np.zeros((1, 17, 3))])
    with pytest.raises(InvalidInputError, match="group"):
        evaluate_pose(a, a, sigmas=np.full(K, 0.05), groups={"bad": [200]})


def test_accepts_keypoints_objects(clip):
    from deid.types import Keypoints

    kp = [Keypoints(a.astype(np.float32)) for a in clip[:3]]
    ev = evaluate_pose(kp, kp, groups=["overall", "hands"])
    assert set(ev.ap) == {"overall", "hands"} and ev.ap["overall"] == pytest.approx(1.0)


def test_ap_with_distinct_scores_is_cocoevals_own():
    """Where no two detections tie, the tie-aware precision is COCOeval.accumulate's."""
    from pycocotools.cocoeval import COCOeval

    from deid.metrics import oks

    rng = np.random.default_rng(3)
    gt = [np.stack([make_person(rng, 200, 300), make_person(rng, 500, 300)]) for _ in range(15)]
    dt = jitter(gt, 6.0)
    for f, a in enumerate(dt):
        a[:, :, 2] = rng.uniform(0.4, 1.0, (len(a), 1))  # a distinct score a person
    seen = {}
    real = COCOeval.accumulate

    def spy(self, p=None):
        real(self, p)
        seen["coco"] = self.eval["precision"].copy()
        seen["ours"] = oks._precision_ties_as_one(self)

    COCOeval.accumulate = spy
    try:
        evaluate_pose(gt, dt, groups=["body"])
    finally:
        COCOeval.accumulate = real
    np.testing.assert_allclose(seen["ours"], seen["coco"])


def test_ap_does_not_depend_on_frame_order_when_scores_tie():
    """MediaPipe scores every face-mesh point 1.0: the same frame pairs in another order
    gave a face AP 14x apart when COCOeval broke the ties by frame order."""
    rng = np.random.default_rng(4)
    gt = [make_person(rng, 200, 300, score=1.0)[None] for _ in range(40)]
    good = jitter(gt[:20], 0.3, seed=5)
    bad = jitter(gt[20:], 40.0, seed=6)
    a = evaluate_pose(gt, good + bad, groups=["face"]).ap["face"]
    b = evaluate_pose(gt[20:] + gt[:20], bad + good, groups=["face"]).ap["face"]
    assert a == pytest.approx(b) and 0.05 < a < 0.95


def test_a_detections_score_is_the_whole_persons_in_every_group():
    """A face detected with a low body score ranks below one with a high body score,
    although both face meshes score 1.0: bad faces on unsure bodies cost less AP."""
    rng = np.random.default_rng(7)
    gt = [make_person(rng, 200, 300, score=1.0)[None] for _ in range(20)]
    dt = jitter(gt[:10], 0.3, seed=8) + jitter(gt[10:], 40.0, seed=9)
    body = list(schema.GROUPS["body"])
    for f, a in enumerate(dt):
        a[:, body, 2] = 0.9 if f < 10 else 0.4  # the bad faces come with an unsure body
    ranked = evaluate_pose(gt, dt, groups=["face"]).ap["face"]
    for a in dt:
        a[:, body, 2] = 1.0  # no difference in score: the bad faces are not ranked below
    tied = evaluate_pose(gt, dt, groups=["face"]).ap["face"]
    assert ranked > tied + 0.2
