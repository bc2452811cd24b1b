"""Keyframe scheduling in the frame analyzer (``track.keyframe_every``): models run on
keyframes, and the frames between two keyframes are analysed one by one unless the two
keyframes agree."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deid.config import Config, ConfigError, TrackConfig
from deid.track.analyzer import FrameAnalyzer, _matched
from deid.track.tracker import Planner
from deid.types import Detections


class ScriptedDetector:
    """Faces by frame number (read from pixel [0, 0]); records what it was asked."""

    name = "scripted"

    def __init__(self, faces: dict[int, list[list[float]]]):
        self.faces = faces
        self.seen: list[int] = []

    def detect(self, frames):
        out = []
        for f in frames:
            i = int(f[0, 0, 0]) + 256 * int(f[0, 0, 1])
            self.seen.append(i)
            b = self.faces.get(i, [])
            out.append(Detections(np.asarray(b, np.float32).reshape(-1, 4), np.ones(len(b), np.float32)) if b else Detections.empty())
        return out


class NoPerson:
    def present(self, frames):
        return [False] * len(frames)


def frames_for(n: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        f = np.zeros((8, 8, 3), np.uint8)
        f[0, 0, 0], f[0, 0, 1] = i % 256, i // 256
        out.append(f)
    return out


def track_cfg(k: int, **kw) -> TrackConfig:
    return dataclasses.replace(Config().track, keyframe_every=k, pose_fallback=False, **kw)


def run(det, n: int, k: int, chunk: int = 10, presence=None, **kw):
    an = FrameAnalyzer(det, track_cfg(k, **kw), None, presence or NoPerson())
    an.reset()
    frames = frames_for(n)
    obs = []
    for s in range(0, n, chunk):
        obs += an.analyze(frames[s : s + chunk], s)
    obs += an.finish()
    return an, obs


def face_at(x: float) -> list[list[float]]:
    return [[x, 20.0, x + 40.0, 60.0]]


def test_steady_face_runs_models_on_keyframes_only():
    det = ScriptedDetector({i: face_at(100) for i in range(40)})
    an, obs = run(det, 40, 4, chunk=7)  # chunks not a multiple of k
    assert [o.index for o in obs] == list(range(40))  # every frame, in order, across chunks
    assert sorted(det.seen) == list(range(0, 40, 4)) + [39]
    assert an.counts["keyframe_gap_frames_skipped"] == 40 - 11
    # frames between are left to the tracker, which interpolates the face across them
    planner = Planner(track_cfg(4), 640, 360)
    planner.add(obs)
    plans = planner.finish()
    assert all(len(p.faces) == 1 for p in plans)
    assert all(p.decision.value == "ok" for p in plans)


def test_face_appearing_between_keyframes_is_found_frame_by_frame():
    det = ScriptedDetector({i: face_at(100) for i in range(6, 30)})
    an, obs = run(det, 30, 4)
    by = {o.index: o for o in obs}
    assert {5, 6, 7} <= set(det.seen)  # keyframes 4 (no face) and 8 (face) disagree
    assert len(by[6].faces) == 1 and len(by[5].faces) == 0


def test_fast_motion_between_keyframes_is_analysed():
    det = ScriptedDetector({i: face_at(10 + 30 * i) for i in range(16)})  # 30 px a frame, 40 px boxes
    an, _ = run(det, 16, 4)
    assert an.counts["keyframe_gap_frames_skipped"] == 0
    assert sorted(det.seen) == list(range(16))


def test_person_without_a_region_makes_the_gap_dense():
    class Present:
        def present(self, frames):
            return [True] * len(frames)

    det = ScriptedDetector({})
    an, obs = run(det, 12, 4, presence=Present())
    assert sorted(det.seen) == list(range(12))
    assert all(o.person_present for o in obs)


def test_every_frame_when_k_is_one():
    det = ScriptedDetector({i: face_at(100) for i in range(20)})
    an, obs = run(det, 20, 1)
    assert sorted(det.seen) == list(range(20)) and len(obs) == 20
    assert an.counts["keyframes"] == 0


def test_reset_starts_a_video_with_a_keyframe():
    det = ScriptedDetector({})
    an = FrameAnalyzer(det, track_cfg(4), None, NoPerson())
    an.reset()
    obs = an.analyze(frames_for(6)[1:], 1) + an.finish()  # a segment starting at frame 1
    assert [o.index for o in obs] == [1, 2, 3, 4, 5]
    assert sorted(det.seen) == [1, 4, 5]


def test_matched_pairs_boxes_one_to_one():
    a = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    assert _matched(a, a[::-1], 0.5)
    assert not _matched(a, a[:1], 0.5)
    assert not _matched(a, a + 6, 0.5)
    assert _matched(np.zeros((0, 4)), np.zeros((0, 4)), 0.5)


def test_keyframe_config_is_checked():
    with pytest.raises(ConfigError):
        Config().replace("track.keyframe_every=0")
    with pytest.raises(ConfigError):
        Config().replace("track.keyframe_every=20")  # > max_gap + 1: the tracker could not bridge it
    assert Config().replace("track.keyframe_every=4").track.keyframe_every == 4


def test_extra_detector_cadence_must_fall_on_keyframes():
    with pytest.raises(ConfigError, match="multiple of track.keyframe_every"):
        Config().replace("track.keyframe_every=3")  # extra_every 8
    Config().replace("track.keyframe_every=3", "detect.extra_every=9")
    Config().replace("track.keyframe_every=3", "detect.extra=")


def test_sparse_detector_runs_on_frame_numbers_not_calls():
    from deid.detect.base import CompositeDetector

    every = ScriptedDetector({})
    sparse = ScriptedDetector({})
    comp = CompositeDetector([(every, 1), (sparse, 8)])
    fr = frames_for(40)
    keys = list(range(0, 40, 4))
    comp.detect_indexed([fr[i] for i in keys], keys)
    assert sparse.seen == [0, 8, 16, 24, 32]  # every 8th frame of the video, although 10 frames were asked
    comp.reset()
    sparse.seen.clear()
    comp.detect(fr[:17])  # plain calls count frames from the reset
    assert sparse.seen == [0, 8, 16]
