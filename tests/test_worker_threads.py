"""The pose / presence worker thread of the frame analyzer (``track.worker_threads``): the
models see the same frames in the same order as without it, so the observations are
identical; errors in the worker reach the caller; ``close()`` stops the thread."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from deid.config import Config
from deid.track.analyzer import FrameAnalyzer
from deid.types import Keypoints

from test_keyframes import ScriptedDetector, face_at, frames_for


def number(frame: np.ndarray) -> int:
    return int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])


class ScriptedPose:
    """A head (nose, eyes, ears, shoulders) on frames in ``heads``, nobody elsewhere;
    records the frame numbers and the thread of each call."""

    name = "scripted_pose"

    def __init__(self, heads: set[int], fail_on: int | None = None):
        self.heads = heads
        self.fail_on = fail_on
        self.seen: list[int] = []
        self.threads: set[str] = set()

    def estimate(self, frames):
        out = []
        for f in frames:
            i = number(f)
            self.seen.append(i)
            self.threads.add(threading.current_thread().name)
            if i == self.fail_on:
                raise RuntimeError(f"pose model failed on frame {i}")
            kp = np.zeros((1, 17, 3), np.float32)
            if i in self.heads:
                x = 100.0 + 3 * i
                kp[0, :5] = [[x, 50, 1], [x - 5, 45, 1], [x + 5, 45, 1], [x - 12, 48, 1], [x + 12, 48, 1]]
                kp[0, 5:7] = [[x - 30, 90, 1], [x + 30, 90, 1]]
            out.append(Keypoints(kp[:, :17] if i in self.heads else np.zeros((0, 17, 3), np.float32), schema="coco17"))
        return out


class ScriptedPresence:
    def __init__(self, present: set[int]):
        self.present_on = present
        self.seen: list[int] = []

    def present(self, frames):
        out = []
        for f in frames:
            self.seen.append(number(f))
            out.append(number(f) in self.present_on)
        return out


def scenario():
    # faces in 0-19 and 50-59; pose finds a head in 30-44; presence says someone in 45-49
    faces = {i: face_at(100 + i) for i in list(range(20)) + list(range(50, 60))}
    return ScriptedDetector(faces), ScriptedPose(set(range(30, 45))), ScriptedPresence(set(range(45, 50)))


def run(threaded: bool, k: int = 1, n: int = 70, chunk: int = 9, pose=None):
    det, p, pres = scenario()
    cfg = dataclasses.replace(Config().track, worker_threads=threaded, keyframe_every=k)
    an = FrameAnalyzer(det, cfg, pose or p, pres)
    obs = analyze_in_chunks(an, frames_for(n), chunk)
    return an, obs, det, pose or p, pres


def analyze_in_chunks(an: FrameAnalyzer, frames, chunk: int = 9):
    """Reset ``an``, feed it ``frames`` ``chunk`` at a time as a video would come, finish
    and close it: every observation, in the order returned."""
    an.reset()
    obs = []
    try:
        for s in range(0, len(frames), chunk):
            obs += an.analyze(frames[s : s + chunk], s)
        obs += an.finish()
    finally:
        an.close()
    return obs


def summary(obs):
    return [
        (o.index, o.faces.boxes.round(2).tolist(), np.asarray(o.head_boxes).round(2).tolist(), o.person_present, o.pose_ran)
        for o in obs
    ]


@pytest.mark.parametrize("k", [1, 4])
def test_threaded_analysis_gives_the_same_observations(k):
    an0, obs0, det0, pose0, pres0 = run(False, k)
    an1, obs1, det1, pose1, pres1 = run(True, k)
    assert [o.index for o in obs1] == list(range(70))  # every frame once, in order
    assert summary(obs1) == summary(obs0)
    assert pose1.seen == pose0.seen and pres1.seen == pres0.seen  # same frames, same order
    assert sorted(det1.seen) == sorted(det0.seen)
    assert an1.counts == an0.counts
    assert pose0.threads == {threading.current_thread().name}
    assert pose1.threads and all(t.startswith("deid-pose") for t in pose1.threads)
    # the scenario exercises all three paths
    assert an1.counts["pose_runs"] > 0 and an1.counts["presence_runs"] > 0
    assert any(len(o.head_boxes) for o in obs1) and any(len(o.faces) for o in obs1)


def test_worker_errors_reach_the_caller():
    det, _, _ = scenario()
    with pytest.raises(RuntimeError, match="pose model failed on frame 33"):
        run(True, pose=ScriptedPose(set(range(30, 45)), fail_on=33))


def test_close_stops_the_worker():
    before = {t.name for t in threading.enumerate()}
    run(True)
    after = {t.name for t in threading.enumerate() if t.name.startswith("deid-pose")}
    assert not after - before


def test_reset_between_videos_waits_for_the_worker():
    det, pose, pres = scenario()
    cfg = dataclasses.replace(Config().track, worker_threads=True)
    an = FrameAnalyzer(det, cfg, pose, pres)
    frames = frames_for(40)
    an.reset()
    an.analyze(frames[25:40], 25)  # leaves a batch in flight (pose on 25-39)
    an.reset()  # next video: the in-flight batch is dropped, not returned
    assert an.finish() == []
    obs = an.analyze(frames[:5], 0) + an.finish()
    assert [o.index for o in obs] == [0, 1, 2, 3, 4]
    an.close()


class ThreadRecordingDetector(ScriptedDetector):
    def __init__(self, faces):
        super().__init__(faces)
        self.threads: set[str] = set()

    def detect(self, frames):
        self.threads.add(threading.current_thread().name)
        return super().detect(frames)


def composite():
    from deid.detect.base import CompositeDetector

    every = ScriptedDetector({i: face_at(100) for i in range(0, 40, 3)})
    sparse = ThreadRecordingDetector({i: face_at(300) for i in range(0, 40, 8)})
    return CompositeDetector([(every, 1), (sparse, 8)]), sparse


def boxes(dets):
    return [d.boxes.round(2).tolist() for d in dets]


def test_prefetched_sparse_detector_gives_the_same_detections():
    fr = frames_for(40)
    plain, sp0 = composite()
    ahead, sp1 = composite()
    want = boxes(plain.detect_indexed(fr, range(40)))
    ahead.prefetch(fr[:20], range(20))
    got = boxes(ahead.detect_indexed(fr[:20], range(20))) + boxes(ahead.detect_indexed(fr[20:], range(20, 40)))
    assert got == want
    assert sorted(sp1.seen) == sorted(sp0.seen) == [0, 8, 16, 24, 32]
    assert any(t.startswith("deid-detect") for t in sp1.threads)  # 0, 8, 16 ran in the worker
    assert not ahead._ahead  # every prefetched result was collected
    ahead.close()


def test_reset_drops_prefetched_results():
    fr = frames_for(16)
    det, sparse = composite()
    det.prefetch(fr, range(16))
    det.reset()
    assert not det._ahead
    sparse.seen.clear()
    det.detect_indexed(fr[:9], range(9))  # runs the sparse member again, on the next video's frames
    assert sorted(sparse.seen) == [0, 8]
    det.close()


def test_analyzer_prefetches_on_a_composite_detector():
    from deid.detect.base import CompositeDetector

    _, pose, pres = scenario()
    every = ScriptedDetector({i: face_at(100) for i in range(20)})
    sparse = ThreadRecordingDetector({i: face_at(300) for i in range(0, 70, 8)})
    obs_by = {}
    for threaded in (False, True):
        det = CompositeDetector([(every, 1), (sparse, 8)])
        cfg = dataclasses.replace(Config().track, worker_threads=threaded)
        an = FrameAnalyzer(det, cfg, ScriptedPose(set(range(30, 45))), ScriptedPresence(set()))
        an.reset()
        fr = frames_for(70)
        obs = []
        for s in range(0, 70, 9):
            obs += an.analyze(fr[s : s + 9], s)
        obs += an.finish()
        an.close()
        det.close()
        obs_by[threaded] = summary(obs)
    assert obs_by[True] == obs_by[False]
    assert any(t.startswith("deid-detect") for t in sparse.threads)


def test_opencv_threads_setting_is_applied_and_checked():
    import cv2

    from deid.config import ConfigError
    from deid.pipeline import apply_process_settings

    before = cv2.getNumThreads()
    try:
        apply_process_settings(Config())  # default: 1
        assert cv2.getNumThreads() == 1
        apply_process_settings(Config().replace("track.opencv_threads=0"))  # OpenCV's default
        default = cv2.getNumThreads()
        apply_process_settings(Config().replace("track.opencv_threads=1"))
        assert cv2.getNumThreads() == 1 and default >= 1
    finally:
        cv2.setNumThreads(before)
    with pytest.raises(ConfigError, match="opencv_threads"):
        Config().replace("track.opencv_threads=-1")


@pytest.mark.parametrize("threaded", [False, True])
def test_pose_checks_frames_with_faces_for_a_person_whose_face_was_missed(threaded):
    # a face is found in every frame (x ~ 400, far from the pose person's head at x ~ 100 + 3i);
    # pose runs on every 8th frame anyway and places the second person's head
    from test_keyframes import ScriptedDetector

    n = 40
    det = ScriptedDetector({i: face_at(400) for i in range(n)})
    pose = ScriptedPose(set(range(n)))
    cfg = dataclasses.replace(Config().track, worker_threads=threaded, pose_check_every=8)
    an = FrameAnalyzer(det, cfg, pose, ScriptedPresence(set()))
    frames = frames_for(n)
    obs = analyze_in_chunks(an, frames)
    assert pose.seen == [0, 8, 16, 24, 32] and an.counts["pose_checks"] == 5
    by = {o.index: o for o in obs}
    for i in pose.seen:
        assert len(by[i].faces) == 1 and len(by[i].head_boxes) == 1, i
        assert by[i].head_boxes[0][2] < 400  # the other person's head, not the found face
    assert all(len(by[i].head_boxes) == 0 for i in range(n) if i % 8)
    # the head of the person whose face *was* found is not added twice
    det2 = ScriptedDetector({i: [[95.0 + 3 * i, 35.0, 110.0 + 3 * i, 55.0]] for i in range(n)})
    an2 = FrameAnalyzer(det2, cfg, ScriptedPose(set(range(n))), ScriptedPresence(set()))
    an2.reset()
    obs2 = an2.analyze(frames, 0) + an2.finish()
    an2.close()
    assert all(len(o.head_boxes) == 0 for o in obs2)
    # off: no pose on frames with faces
    an3 = FrameAnalyzer(det, dataclasses.replace(cfg, pose_check_every=0), ScriptedPose(set()), ScriptedPresence(set()))
    an3.reset()
    an3.analyze(frames, 0)
    an3.finish()
    an3.close()
    assert an3.pose.seen == []
