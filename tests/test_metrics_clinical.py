"""Clinical motion features from synthetic keypoint tracks with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from deid.errors import InvalidInputError
from deid.metrics import clinical as C

K = 133
FPS = 30.0


def base_track(T):
    """A still person: every keypoint found, scattered so nothing is degenerate."""
    rng = np.random.default_rng(0)
    k = np.zeros((T, K, 3))
    k[:, :, :2] = rng.uniform(100, 500, (K, 2))[None]
    k[:, :, 2] = 0.9
    return k


def tapping_track(T=300, fps=FPS, freq=3.0, amp=(0.6, 0.6), side="right", noise=0.0, seed=0, hand_px=80.0):
    """Thumb-index gap / hand size = 0.2 + a(t) * (1 - cos(2 pi f t)) / 2: taps of
    normalised amplitude a(t) (linearly from amp[0] to amp[1])."""
    k = base_track(T)
    t = np.arange(T) / fps
    a = np.linspace(amp[0], amp[1], T)
    h0 = C.HAND0[side]
    cx, cy = 300.0, 300.0
    k[:, h0 + C.WRIST, :2] = (cx, cy + hand_px)
    k[:, h0 + C.MIDDLE_MCP, :2] = (cx, cy)
    gap = hand_px * (0.2 + a * (0.5 - 0.5 * np.cos(2 * np.pi * freq * t)))
    k[:, h0 + C.THUMB_TIP, 0], k[:, h0 + C.THUMB_TIP, 1] = cx - gap / 2, cy - 20
    k[:, h0 + C.INDEX_TIP, 0], k[:, h0 + C.INDEX_TIP, 1] = cx + gap / 2, cy - 20
    rng = np.random.default_rng(seed)
    k[:, :, :2] += rng.normal(0, noise, (T, K, 2))
    return k


@pytest.mark.parametrize("freq", [1.5, 3.0, 5.0])
def test_finger_tapping_recovers_frequency_and_amplitude(freq):
    r = C.finger_tapping(tapping_track(freq=freq), FPS, "right")
    assert r["frequency_hz"] == pytest.approx(freq, rel=0.02)
    assert r["amplitude"] == pytest.approx(0.6, rel=0.05)
    assert abs(r["decrement"]) < 0.05
    other = C.finger_tapping(tapping_track(freq=freq), FPS, "left")  # that hand does not move
    assert np.isnan(other["frequency_hz"])


def test_finger_tapping_with_noise_and_gaps():
    k = tapping_track(freq=2.5, noise=1.5, seed=3)
    h0 = C.HAND0["right"]
    lost = np.random.default_rng(4).choice(len(k), size=len(k) // 5, replace=False)
    k[lost, h0 + C.INDEX_TIP, 2] = 0.0  # 20% of frames miss the index tip
    r = C.finger_tapping(k, FPS, "right")
    assert r["frequency_hz"] == pytest.approx(2.5, rel=0.05)
    assert r["amplitude"] == pytest.approx(0.6, rel=0.15)


def test_finger_tapping_decrement():
    r = C.finger_tapping(tapping_track(amp=(0.8, 0.3)), FPS, "right")
    assert 0.3 < r["decrement"] < 0.7  # taps shrink to ~40% by the end
    assert r["frequency_hz"] == pytest.approx(3.0, rel=0.03)


def test_missing_too_often_is_nan():
    k = tapping_track()
    k[::2, C.HAND0["right"] + C.THUMB_TIP, 2] = 0.0  # half the frames
    r = C.finger_tapping(k, FPS, "right")
    assert all(np.isnan(v) for v in r.values())
    assert not np.isnan(C.finger_tapping(k, FPS, "right", max_missing=0.6)["frequency_hz"])


def test_hand_opening_rate():
    T, f = 240, 1.2
    k = base_track(T)
    h0 = C.HAND0["left"]
    t = np.arange(T) / FPS
    k[:, h0 + C.WRIST, :2] = (300, 400)
    k[:, h0 + C.MIDDLE_MCP, :2] = (300, 330)
    reach = 70 + 60 * (0.5 - 0.5 * np.cos(2 * np.pi * f * t))  # fingertips 70..130 px from wrist
    for tip in C.FINGERTIPS:
        k[:, h0 + tip, 0] = 300
        k[:, h0 + tip, 1] = 400 - reach
    r = C.hand_opening(k, FPS, "left")
    assert r["rate_hz"] == pytest.approx(f, rel=0.03)
    assert r["amplitude"] == pytest.approx(60 / 70, rel=0.05)


def test_mouth_opening():
    T = 100
    k = base_track(T)
    F0 = C.FACE0
    k[:, F0 + C.NOSE_BRIDGE_TOP_68, :2] = (300, 200)
    k[:, F0 + C.CHIN_68, :2] = (300, 300)  # face height 100
    gap = np.where(np.arange(T) < 50, 10.0, 30.0)
    k[:, F0 + C.MOUTH_INNER_TOP_68, :2] = (300, 260)
    k[:, F0 + C.MOUTH_INNER_BOTTOM_68, 0] = 300
    k[:, F0 + C.MOUTH_INNER_BOTTOM_68, 1] = 260 + gap
    r = C.mouth_opening(k)
    assert r["mean"] == pytest.approx(0.2)
    assert r["range"] == pytest.approx(0.2)
    k[:, F0 + C.CHIN_68, 2] = 0.0
    assert np.isnan(C.mouth_opening(k)["mean"])


def eye_track(T, blink_starts, blink_len=4):
    """Both eyes open (EAR 0.3) except for ``blink_len``-frame blinks (EAR 0.05)."""
    k = base_track(T)
    ear = np.full(T, 0.3)
    for s in blink_starts:
        ear[s : s + blink_len] = 0.05
    for e, cx in zip(C.EYES_68, (250.0, 350.0)):
        p = [C.FACE0 + i for i in e]
        w = 30.0
        k[:, p[0], :2] = (cx - w / 2, 200)
        k[:, p[3], :2] = (cx + w / 2, 200)
        gap = ear * w  # each lid pair is gap apart: EAR = (gap + gap) / (2 w)
        for top, bot, x in ((p[1], p[5], cx - 5), (p[2], p[4], cx + 5)):
            k[:, top, 0], k[:, bot, 0] = x, x
            k[:, top, 1], k[:, bot, 1] = 200 - gap / 2, 200 + gap / 2
    return k, ear


def test_eye_aspect_ratio_and_blink_rate():
    T = int(60 * FPS)  # one minute
    starts = np.arange(50, T - 50, 150)  # a blink every 5 s -> 12 per minute
    k, ear = eye_track(T, starts)
    np.testing.assert_allclose(C.eye_aspect_ratio(k), ear, rtol=1e-9)
    assert C.blink_rate(k, FPS) == pytest.approx(len(starts))
    # eyes closed for 2 s is not a blink
    k2, _ = eye_track(T, [100], blink_len=60)
    assert C.blink_rate(k2, FPS) == 0.0
    assert C.blink_rate(k, FPS, ear_threshold=0.01) == 0.0


def test_gait_cadence_from_ankles():
    T, stride_hz = 300, 0.9  # 0.9 strides/s = 108 steps/min
    k = base_track(T)
    t = np.arange(T) / FPS
    sep = 60 * np.sin(2 * np.pi * stride_hz * t)
    walk = 3.0 * np.arange(T)  # walking across the frame
    k[:, C.L_HIP, :2] = np.stack([400 + walk, np.full(T, 300)], 1)
    k[:, C.R_HIP, :2] = np.stack([400 + walk, np.full(T, 300)], 1)
    k[:, C.L_ANKLE, :2] = np.stack([400 + walk + sep / 2, np.full(T, 500)], 1)
    k[:, C.R_ANKLE, :2] = np.stack([400 + walk - sep / 2, np.full(T, 500)], 1)
    assert C.gait_cadence(k, FPS) == pytest.approx(108, rel=0.03)
    k[:, C.L_ANKLE, 2] = 0.0  # legs out of view
    assert np.isnan(C.gait_cadence(k, FPS))


def test_clinical_features_and_errors():
    feats = C.clinical_features(tapping_track(), FPS)
    assert tuple(feats) == C.FEATURE_NAMES
    assert feats["finger_tap_right_frequency_hz"] == pytest.approx(3.0, rel=0.02)
    assert np.isnan(feats["gait_cadence_steps_per_min"])  # the still track has no stepping
    err = C.feature_errors(feats, feats)
    assert all(v == 0.0 or np.isnan(v) for v in err.values())
    slower = C.clinical_features(tapping_track(freq=2.4), FPS)
    err = C.feature_errors(feats, slower)
    assert err["finger_tap_right_frequency_hz"] == pytest.approx(0.2, abs=0.02)
    e = C.feature_errors(
        {"a": 2.0, "b": 0.0, "c": 0.0, "d": np.nan, "finger_tap_left_decrement": 0.1},
        {"a": 3.0, "b": 0.0, "c": 1.0, "d": 1.0, "finger_tap_left_decrement": 0.3},
    )
    assert e["a"] == 0.5 and e["b"] == 0.0 and e["c"] == np.inf and np.isnan(e["d"])
    assert e["finger_tap_left_decrement"] == pytest.approx(0.2)  # absolute for decrement


def test_primary_person_and_input_checks():
    small = np.zeros((K, 3))
    small[:10, :2] = np.random.default_rng(0).uniform(0, 10, (10, 2))
    small[:10, 2] = 1
    big = small.copy()
    big[:10, :2] *= 20
    track = C.primary_person([np.stack([small, big]), np.zeros((0, K, 3)), big[None]])
    assert track.shape == (3, K, 3)
    np.testing.assert_array_equal(track[0], big)
    assert (track[1] == 0).all()
    with pytest.raises(InvalidInputError, match="wholebody133"):
        C.finger_tapping(np.zeros((10, 17, 3)), FPS)
    with pytest.raises(InvalidInputError, match="frame rate"):
        C.finger_tapping(np.zeros((10, K, 3)), 0)
    with pytest.raises(InvalidInputError, match="side"):
        C.finger_tapping(np.zeros((10, K, 3)), FPS, "middle")


def test_indices_agree_with_the_pose_schema():
    schema = pytest.importorskip("deid.pose.schema")
    assert schema.index_of("left_hip") == C.L_HIP and schema.index_of("right_ankle") == C.R_ANKLE
    for side, h0 in C.HAND0.items():
        assert schema.SCHEMA[h0 + C.WRIST].name == f"{side}_hand_wrist"
        assert schema.SCHEMA[h0 + C.THUMB_TIP].name == f"{side}_thumb_4"
        assert schema.SCHEMA[h0 + C.INDEX_TIP].name == f"{side}_index_4"
        assert schema.SCHEMA[h0 + C.MIDDLE_MCP].name == f"{side}_middle_1"
    assert schema.REGIONS["face"][0] == C.FACE0
    assert schema.SCHEMA[C.FACE0 + C.EYES_68[0][0]].name.startswith("face_right_eye")
    assert schema.SCHEMA[C.FACE0 + C.MOUTH_INNER_TOP_68].name.startswith("face_mouth_inner")
    assert schema.SCHEMA[C.FACE0 + C.CHIN_68].name == "face_jaw_8"
