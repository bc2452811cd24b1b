"""Clinical motion features from a keypoint time series (wholebody133), the quantities a
movement-disorder clinician reads from a video (MDS-UPDRS part III items: 3.4 finger
tapping, 3.5 hand movements, 3.10 gait; facial expression 3.2 via blinking and mouth
opening). De-identification should leave them unchanged: :func:`feature_errors`
compares the features of the original and the processed video.

Input is one person's track, (T, 133, 3) x, y, score (see :func:`primary_person` to get
it from per-frame multi-person arrays) and the frame rate. Sides are the *person's*
(COCO convention). Every feature is NaN when the points it needs are found (score >=
``min_score``) in fewer than ``1 - max_missing`` of the frames, or when the signal
shows too few movement cycles to measure.

Signals (all scale-free, so camera distance does not matter):
- finger tapping: thumb tip - index tip distance / hand size (wrist to middle-finger
  MCP); amplitude = median per-tap peak-to-trough, frequency = taps per second,
  decrement = 1 - mean amplitude of the last third of taps / first third (> 0 when taps
  shrink, the "sequence effect" of bradykinesia);
- hand opening/closing: mean fingertip-to-wrist distance / hand size; amplitude and rate;
- mouth opening: inner-lip gap (iBUG points 62-66) / face height (nose bridge top 27
  to chin 8); mean and range (95th - 5th percentile);
- blinks per minute from the eye aspect ratio EAR = (|p2-p6| + |p3-p5|) / (2 |p1-p4|)
  over each eye's six iBUG points (Soukupova & Cech, CVWW 2016); a blink is a run of
  frames with EAR below a threshold, at most ``max_blink_s`` long;
- gait cadence: steps per minute; the left-right ankle separation oscillates once per
  stride (two steps).

Cycles are counted with a hysteresis zero-crossing detector on the de-trended signal
(robust to non-sinusoidal tapping), with crossing times interpolated between frames.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import InvalidInputError

K_WHOLEBODY = 133
# wholebody133 indices (deid.pose.schema; COCO-WholeBody layout). Kept here as plain
# numbers so a metric never needs a pose backend; checked against the schema in tests.
L_HIP, R_HIP, L_ANKLE, R_ANKLE = 11, 12, 15, 16
FACE0 = 23  # iBUG-68 point i is FACE0 + i
HAND0 = {"left": 91, "right": 112}  # COCO-WholeBody hand: 0 wrist, 1-4 thumb, 5-8 index, 9-12 middle, ...
WRIST, THUMB_TIP, INDEX_TIP, MIDDLE_MCP = 0, 4, 8, 9
FINGERTIPS = (4, 8, 12, 16, 20)
EYES_68 = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47))  # p1..p6 per eye
MOUTH_INNER_TOP_68, MOUTH_INNER_BOTTOM_68 = 62, 66
NOSE_BRIDGE_TOP_68, CHIN_68 = 27, 8

#: every feature :func:`clinical_features` returns, in a stable order (summary columns).
FEATURE_NAMES: tuple[str, ...] = (
    "finger_tap_left_amplitude",
    "finger_tap_left_frequency_hz",
    "finger_tap_left_decrement",
    "finger_tap_right_amplitude",
    "finger_tap_right_frequency_hz",
    "finger_tap_right_decrement",
    "hand_open_left_amplitude",
    "hand_open_left_rate_hz",
    "hand_open_right_amplitude",
    "hand_open_right_rate_hz",
    "mouth_opening_mean",
    "mouth_opening_range",
    "blink_rate_per_min",
    "gait_cadence_steps_per_min",
)
#: features compared by absolute rather than relative error (already fractions, often ~0).
ABSOLUTE_ERROR_FEATURES = frozenset({"finger_tap_left_decrement", "finger_tap_right_decrement"})

NAN = float("nan")


# ----------------------------------------------------------------------------- input


def _check(kps: np.ndarray, fps: float) -> np.ndarray:
    a = np.asarray(getattr(kps, "data", kps), np.float64)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[1] != K_WHOLEBODY:
        raise InvalidInputError(
            f"clinical features need one person's track as (T, {K_WHOLEBODY}, 3) wholebody133 keypoints, got {a.shape}; "
            "use primary_person() to pick one person per frame"
        )
    if not (fps > 0):
        raise InvalidInputError(f"clinical features need the video's frame rate (> 0), got {fps}")
    return a


def primary_person(frames: Sequence[np.ndarray], num_keypoints: int = K_WHOLEBODY) -> np.ndarray:
    """(T, K, 3) track of the main person: per frame, the person whose found keypoints
    span the largest box (the patient is usually the largest, closest person in a
    clinical recording). Frames without anyone are all-zero (score 0 = missing)."""
    out = np.zeros((len(frames), num_keypoints, 3))
    for t, f in enumerate(frames):
        a = np.asarray(getattr(f, "data", f), np.float64)
        if a.size == 0:
            continue
        best, best_area = None, -1.0
        for p in a:
            ok = p[:, 2] > 0
            if not ok.any():
                continue
            w, h = np.ptp(p[ok, 0]), np.ptp(p[ok, 1])
            if w * h > best_area:
                best, best_area = p, w * h
        if best is not None:
            out[t] = best
    return out


def _valid(kps: np.ndarray, idx: Sequence[int], min_score: float) -> np.ndarray:
    sub = kps[:, list(idx)]
    return (sub[..., 2] >= min_score).all(axis=1) & np.isfinite(sub[..., :2]).all(axis=(1, 2))


def _dist(kps: np.ndarray, i: int, j: int) -> np.ndarray:
    return np.linalg.norm(kps[:, i, :2] - kps[:, j, :2], axis=1)


def _enough(valid: np.ndarray, max_missing: float) -> bool:
    return len(valid) > 1 and valid.mean() >= 1.0 - max_missing


def _fill(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation over invalid frames (edges hold the nearest valid value)."""
    t = np.arange(len(x))
    return np.interp(t, t[valid], x[valid])


# ----------------------------------------------------------------------------- cycles


def _moving_average(x: np.ndarray, w: int) -> np.ndarray:
    if w <= 1 or len(x) < 2:
        return x
    w = min(w, len(x))
    pad = w // 2
    xp = np.pad(x, (pad, w - 1 - pad), mode="reflect" if len(x) > pad else "edge")
    return np.convolve(xp, np.ones(w) / w, mode="valid")


def cycles(x: np.ndarray, fps: float, min_hz: float, max_hz: float, hysteresis: float = 0.5) -> tuple[float, np.ndarray]:
    """Frequency (Hz) and per-cycle peak-to-trough amplitudes of an oscillating signal.

    The signal is de-trended by subtracting a moving average one slowest period
    (``1 / min_hz``) long and lightly smoothed (half the fastest period), then
    a cycle starts each time it rises from below ``-h`` to above ``+h`` (``h`` =
    ``hysteresis`` x its standard deviation; noise around zero does not count). The
    frequency is (cycles between the first and last start) / (their time apart).
    Returns (NaN, empty) with fewer than two complete cycles."""
    x = np.asarray(x, np.float64)
    n = len(x)
    if n < 4:
        return NAN, np.zeros(0)
    trend = _moving_average(x, int(round(fps / min_hz)))
    y = _moving_average(x - trend, max(1, int(round(fps / max_hz / 2))))
    sd = float(np.std(y))
    if not sd > 1e-12:
        return NAN, np.zeros(0)
    h = hysteresis * sd
    starts: list[float] = []
    armed = False
    for i in range(n):
        if y[i] < -h:
            armed = True
        elif y[i] > h and armed:
            armed = False
            j = i
            while j > 0 and y[j - 1] > 0:  # walk back to the zero crossing
                j -= 1
            if j == 0:
                starts.append(0.0)
            else:
                a, b = y[j - 1], y[j]
                starts.append((j - 1) + (0.0 - a) / (b - a) if b != a else float(j))
    if len(starts) < 3:
        return NAN, np.zeros(0)
    freq = (len(starts) - 1) / ((starts[-1] - starts[0]) / fps)
    amps = []
    for s, e in zip(starts[:-1], starts[1:]):
        seg = x[int(np.ceil(s)) : int(np.floor(e)) + 1]
        if len(seg):
            amps.append(float(seg.max() - seg.min()))
    return float(freq), np.asarray(amps)


def _decrement(amps: np.ndarray) -> float:
    if len(amps) < 3:
        return NAN
    k = max(1, len(amps) // 3)
    first, last = float(np.mean(amps[:k])), float(np.mean(amps[-k:]))
    return 1.0 - last / first if first > 0 else NAN


# ----------------------------------------------------------------------------- features


def _hand_signal(kps, side, tips, min_score, max_missing):
    if side not in HAND0:
        raise InvalidInputError(f"side must be 'left' or 'right' (the person's side), got {side!r}")
    h0 = HAND0[side]
    idx = [h0 + WRIST, h0 + MIDDLE_MCP] + [h0 + t for t in tips]
    valid = _valid(kps, idx, min_score)
    if not _enough(valid, max_missing):
        return None
    size = _dist(kps, h0 + WRIST, h0 + MIDDLE_MCP)
    valid &= size > 1e-6
    if not _enough(valid, max_missing):
        return None
    return valid, size, h0


def finger_tapping(
    kps: np.ndarray, fps: float, side: str = "right", *, min_score: float = 0.3, max_missing: float = 0.3,
    min_hz: float = 0.5, max_hz: float = 10.0,
) -> dict[str, float]:
    """``{amplitude, frequency_hz, decrement}`` of thumb-index tapping on one hand."""
    kps = _check(kps, fps)
    got = _hand_signal(kps, side, (THUMB_TIP, INDEX_TIP), min_score, max_missing)
    if got is None:
        return {"amplitude": NAN, "frequency_hz": NAN, "decrement": NAN}
    valid, size, h0 = got
    sig = _fill(_dist(kps, h0 + THUMB_TIP, h0 + INDEX_TIP) / np.where(valid, size, 1.0), valid)
    freq, amps = cycles(sig, fps, min_hz, max_hz)
    return {
        "amplitude": float(np.median(amps)) if len(amps) else NAN,
        "frequency_hz": freq,
        "decrement": _decrement(amps),
    }


def hand_opening(
    kps: np.ndarray, fps: float, side: str = "right", *, min_score: float = 0.3, max_missing: float = 0.3,
    min_hz: float = 0.3, max_hz: float = 6.0,
) -> dict[str, float]:
    """``{amplitude, rate_hz}`` of repeated hand opening/closing (fingertips to wrist)."""
    kps = _check(kps, fps)
    got = _hand_signal(kps, side, FINGERTIPS, min_score, max_missing)
    if got is None:
        return {"amplitude": NAN, "rate_hz": NAN}
    valid, size, h0 = got
    spread = np.mean([_dist(kps, h0 + WRIST, h0 + t) for t in FINGERTIPS], axis=0)
    sig = _fill(spread / np.where(valid, size, 1.0), valid)
    freq, amps = cycles(sig, fps, min_hz, max_hz)
    return {"amplitude": float(np.median(amps)) if len(amps) else NAN, "rate_hz": freq}


def mouth_opening(kps: np.ndarray, *, min_score: float = 0.3, max_missing: float = 0.3) -> dict[str, float]:
    """``{mean, range}`` of inner-lip gap / face height over the frames where it is seen."""
    kps = _check(kps, 1.0)
    top, bottom = FACE0 + MOUTH_INNER_TOP_68, FACE0 + MOUTH_INNER_BOTTOM_68
    brow, chin = FACE0 + NOSE_BRIDGE_TOP_68, FACE0 + CHIN_68
    valid = _valid(kps, (top, bottom, brow, chin), min_score)
    height = _dist(kps, brow, chin)
    valid &= height > 1e-6
    if not _enough(valid, max_missing):
        return {"mean": NAN, "range": NAN}
    r = _dist(kps, top, bottom)[valid] / height[valid]
    return {"mean": float(r.mean()), "range": float(np.percentile(r, 95) - np.percentile(r, 5))}


def eye_aspect_ratio(kps: np.ndarray) -> np.ndarray:
    """(T,) mean EAR of both eyes (see module doc); no visibility check."""
    ears = []
    for eye in EYES_68:
        p = [FACE0 + i for i in eye]
        vert = _dist(kps, p[1], p[5]) + _dist(kps, p[2], p[4])
        horiz = 2.0 * _dist(kps, p[0], p[3])
        with np.errstate(invalid="ignore", divide="ignore"):
            ears.append(np.where(horiz > 1e-6, vert / horiz, np.nan))
    return np.mean(ears, axis=0)


def blink_rate(
    kps: np.ndarray, fps: float, *, min_score: float = 0.3, max_missing: float = 0.3,
    ear_threshold: float | None = None, relative_threshold: float = 0.75, max_blink_s: float = 0.5,
) -> float:
    """Blinks per minute. ``ear_threshold`` None: ``relative_threshold`` x the clip's
    median EAR (landmark models differ in absolute EAR; a person's open-eye baseline
    is their median, as blinks occupy a few percent of the time)."""
    kps = _check(kps, fps)
    idx = [FACE0 + i for eye in EYES_68 for i in eye]
    valid = _valid(kps, idx, min_score)
    ear = eye_aspect_ratio(kps)
    valid &= np.isfinite(ear)
    if not _enough(valid, max_missing):
        return NAN
    ear = _fill(ear, valid)
    thr = float(ear_threshold) if ear_threshold is not None else relative_threshold * float(np.median(ear[valid]))
    closed = ear < thr
    # runs of closed frames: starts where closed turns on, ends where it turns off
    edges = np.diff(np.concatenate([[0], closed.astype(int), [0]]))
    run_start, run_end = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    n = int(np.sum((run_end - run_start) <= max_blink_s * fps))
    minutes = len(kps) / fps / 60.0
    return n / minutes


def gait_cadence(
    kps: np.ndarray, fps: float, *, min_score: float = 0.3, max_missing: float = 0.3,
    min_hz: float = 0.2, max_hz: float = 3.0,
) -> float:
    """Steps per minute from the oscillation of the left-right ankle separation along
    its main direction (works for walking across or towards the camera). NaN when the
    legs are not visible often enough."""
    kps = _check(kps, fps)
    valid = _valid(kps, (L_HIP, R_HIP, L_ANKLE, R_ANKLE), min_score)
    if not _enough(valid, max_missing):
        return NAN
    sep = kps[:, L_ANKLE, :2] - kps[:, R_ANKLE, :2]
    sep = np.stack([_fill(sep[:, 0], valid), _fill(sep[:, 1], valid)], axis=1)
    centred = sep - sep.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    sig = centred @ vt[0]
    freq, _ = cycles(sig, fps, min_hz, max_hz)
    return 2.0 * 60.0 * freq if np.isfinite(freq) else NAN


def clinical_features(kps: np.ndarray, fps: float, *, min_score: float = 0.3, max_missing: float = 0.3) -> dict[str, float]:
    """Every feature in :data:`FEATURE_NAMES` for one person's track."""
    kw = {"min_score": min_score, "max_missing": max_missing}
    out: dict[str, float] = {}
    for side in ("left", "right"):
        for k, v in finger_tapping(kps, fps, side, **kw).items():
            out[f"finger_tap_{side}_{k}"] = v
        for k, v in hand_opening(kps, fps, side, **kw).items():
            out[f"hand_open_{side}_{k}"] = v
    for k, v in mouth_opening(kps, **kw).items():
        out[f"mouth_opening_{k}"] = v
    out["blink_rate_per_min"] = blink_rate(kps, fps, **kw)
    out["gait_cadence_steps_per_min"] = gait_cadence(kps, fps, **kw)
    return {name: float(out[name]) for name in FEATURE_NAMES}


def feature_errors(orig: Mapping[str, float], proc: Mapping[str, float]) -> dict[str, float]:
    """Per feature: relative error ``|proc - orig| / |orig|`` (absolute error for the
    features in :data:`ABSOLUTE_ERROR_FEATURES`). NaN when either side is NaN (the
    feature could not be measured), 0 when both are 0, +inf when only the original is 0."""
    out = {}
    for name in orig:
        o, p = float(orig[name]), float(proc.get(name, NAN))
        if not (np.isfinite(o) and np.isfinite(p)):
            out[name] = NAN
        elif name in ABSOLUTE_ERROR_FEATURES:
            out[name] = abs(p - o)
        elif o == 0.0:
            out[name] = 0.0 if p == 0.0 else float("inf")
        else:
            out[name] = abs(p - o) / abs(o)
    return out
