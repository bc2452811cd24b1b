"""More people from a single-person pose model (deid.track.people.MaskedRepeat,
``track.pose_more_people``): the found people and faces are blacked out and the model
asked again; the analyzer does it at the pose checks' cadence and adds the heads it
places. Unit tests on scripted models, then MediaPipe on real multi-person photos."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deid.config import Config
from deid.track.analyzer import FrameAnalyzer
from deid.track.boxes import head_box_from_keypoints
from deid.track.people import MaskedRepeat, person_box
from deid.types import Keypoints

from conftest import REPO, media_path
from test_keyframes import ScriptedDetector, face_at, frames_for
from test_worker_threads import ScriptedPose, ScriptedPresence, analyze_in_chunks, number


def person_at(x: float, y: float = 100.0, s: float = 10.0) -> np.ndarray:
    """(17, 3) COCO keypoints of a person whose nose is at (x, y), head size ~ s."""
    kp = np.zeros((17, 3), np.float32)
    kp[:5] = [[x, y, 1], [x - s / 3, y - s / 4, 1], [x + s / 3, y - s / 4, 1], [x - s / 2, y, 1], [x + s / 2, y, 1]]
    kp[5:7] = [[x - 2 * s, y + 2 * s, 1], [x + 2 * s, y + 2 * s, 1]]  # shoulders
    kp[11:13] = [[x - s, y + 6 * s, 1], [x + s, y + 6 * s, 1]]  # hips
    return kp


class PixelPose:
    """A single-person model over a 320x240 frame: reports the first of ``people`` whose
    nose pixel is not black (a blacked-out person is not seen); records each frame."""

    def __init__(self, people: list[np.ndarray]):
        self.people = people
        self.frames: list[np.ndarray] = []

    def estimate(self, frames):
        out = []
        for f in frames:
            self.frames.append(f.copy())
            seen = [p for p in self.people if f[int(p[0, 1]), int(p[0, 0])].any()]
            out.append(Keypoints(np.stack(seen[:1]) if seen else np.zeros((0, 17, 3), np.float32), schema="coco17"))
        return out


def grey_frame() -> np.ndarray:
    return np.full((240, 320, 3), 128, np.uint8)


def test_person_box_holds_the_points_and_the_head_with_a_margin():
    kp = person_at(100, 60, 20)
    b = person_box(kp, 0.5, 320, 240)
    head = head_box_from_keypoints(kp, 0.5)
    assert b[0] <= head[0] and b[1] <= head[1] and b[2] >= head[2] and b[3] >= head[3]
    conf = kp[kp[:, 2] >= 0.5]
    assert b[0] < conf[:, 0].min() and b[3] > conf[:, 1].max()  # a margin past the outer points
    # clipped to the frame; too few confident points: nothing to black out
    assert np.all(person_box(person_at(5, 5, 20), 0.5, 320, 240)[:2] == 0)
    weak = kp.copy()
    weak[1:, 2] = 0.1
    assert person_box(weak, 0.5, 320, 240) is None


def test_finds_the_next_person_with_the_known_ones_blacked_out():
    a, b, c = person_at(60), person_at(160), person_at(260)
    model = PixelPose([a, b, c])
    mr = MaskedRepeat(model, max_extra=2)
    more = mr.more(grey_frame(), np.stack([a]), np.zeros((0, 4)))
    assert len(more) == 2
    np.testing.assert_allclose(more[0], b)
    np.testing.assert_allclose(more[1], c)
    # round 1 blacked out a's box, round 2 a's and b's: the model saw each of them masked
    f1, f2 = model.frames
    for f, gone in ((f1, [a]), (f2, [a, b])):
        for p in gone:
            x0, y0, x1, y1 = person_box(p, 0.5, 320, 240).astype(int)
            assert not f[y0:y1, x0:x1].any()
    assert f1[100, 160].any() and f1[100, 260].any()  # the others still in view
    assert mr.runs == 2


def test_max_extra_and_the_stopping_rules():
    a, b, c = person_at(60), person_at(160), person_at(260)
    assert len(MaskedRepeat(PixelPose([a, b, c]), max_extra=1).more(grey_frame(), np.stack([a]), np.zeros((0, 4)))) == 1
    # nobody left after b: the third round finds no one and ends the search
    mr = MaskedRepeat(PixelPose([a, b]), max_extra=3)
    assert len(mr.more(grey_frame(), np.stack([a]), np.zeros((0, 4)))) == 1 and mr.runs == 2
    # nothing known (no person, no face head): the model already saw this frame, no round
    mr = MaskedRepeat(PixelPose([a]), max_extra=2)
    assert len(mr.more(grey_frame(), np.zeros((0, 17, 3), np.float32), np.zeros((0, 4)))) == 0 and mr.runs == 0
    # covered boxes (found faces' heads) are blacked out too: a face-only person is not
    # reported again, the person beside them is
    head_a = head_box_from_keypoints(a, 0.5)
    more = MaskedRepeat(PixelPose([a, b]), max_extra=2).more(grey_frame(), np.zeros((0, 17, 3), np.float32), head_a[None])
    assert len(more) == 1 and more[0][0, 0] == 160


def test_a_known_person_found_again_ends_the_search():
    a = person_at(60)

    class Stubborn:  # reports a's keypoints whatever is blacked out (an arm left outside)
        def estimate(self, frames):
            return [Keypoints(a[None], schema="coco17") for _ in frames]

    assert len(MaskedRepeat(Stubborn(), max_extra=3).more(grey_frame(), np.stack([a]), np.zeros((0, 4)))) == 0
    with pytest.raises(ValueError):
        MaskedRepeat(Stubborn(), max_extra=0)


class ScriptedMore:
    """Stands in for MaskedRepeat in the analyzer: one more person at x = 300 on every
    frame asked (or on the frames in ``on``); records (frame number, people found,
    covered boxes)."""

    def __init__(self, on: set[int] | None = None):
        self.calls: list[tuple[int, int, np.ndarray]] = []
        self.on = on

    def more(self, frame, people, covered):
        self.calls.append((number(frame), len(people), np.asarray(covered)))
        if self.on is not None and number(frame) not in self.on:
            return np.zeros((0, 17, 3), np.float32)
        kp = np.zeros((1, 17, 3), np.float32)
        kp[0, :5] = [[300, 50, 1], [295, 45, 1], [305, 45, 1], [288, 48, 1], [312, 48, 1]]
        return kp


@pytest.mark.parametrize("threaded", [False, True])
def test_analyzer_asks_for_more_people_on_the_check_cadence(threaded):
    # faces in 0-19 (x = 400); none in 20-39, where pose finds the person at 100 + 3i
    n = 40
    det = ScriptedDetector({i: face_at(400) for i in range(20)})
    pose = ScriptedPose(set(range(20, n)))
    more = ScriptedMore()
    cfg = dataclasses.replace(Config().track, worker_threads=threaded, pose_check_every=8, pose_more_every=0)
    an = FrameAnalyzer(det, cfg, pose, ScriptedPresence(set()), more)
    frames = frames_for(n)
    obs = analyze_in_chunks(an, frames)
    asked = [c[0] for c in more.calls]
    # the checks on frames with faces (0, 8, 16) and the fallback frames on the cadence (24, 32)
    assert asked == [0, 8, 16, 24, 32]
    assert an.counts["pose_more_frames"] == 5 and an.counts["pose_more_heads"] == 5
    calls = {c[0]: c for c in more.calls}
    assert len(calls[8][2]) == 1 and calls[8][2][0][0] < 400 < calls[8][2][0][2]  # the found face's head, padded
    assert calls[24][1] == 1 and len(calls[24][2]) == 0  # pose's person, no face
    by = {o.index: o for o in obs}
    for i in (0, 8, 16):  # the face, plus the further person's head
        assert len(by[i].faces) == 1 and len(by[i].head_boxes) == 1 and by[i].head_boxes[0][0] > 250
    for i in (24, 32):  # pose's person and the further one
        assert sorted(round(float(b[0])) > 250 for b in by[i].head_boxes) == [False, True]
    assert all(len(by[i].head_boxes) == 1 for i in range(24, n) if i % 8)  # pose's person only (20-23: the hold)
    # off: never asked
    more0 = ScriptedMore()
    an0 = FrameAnalyzer(det, dataclasses.replace(cfg, pose_check_every=0), ScriptedPose(set(range(20, n))), ScriptedPresence(set()), more0)
    an0.reset()
    an0.analyze(frames, 0)
    an0.finish()
    an0.close()
    assert more0.calls == []


@pytest.mark.parametrize("threaded", [False, True])
def test_a_person_found_is_followed_on_every_kth_frame_while_found(threaded):
    # faces in every frame; pose (nobody) at the checks 0, 16, 32; the further person is
    # in view on frames 16-28 only
    n = 48
    det = ScriptedDetector({i: face_at(400) for i in range(n)})
    more = ScriptedMore(on=set(range(16, 29)))
    cfg = dataclasses.replace(Config().track, worker_threads=threaded, pose_check_every=16, pose_more_every=4)
    an = FrameAnalyzer(det, cfg, ScriptedPose(set()), ScriptedPresence(set()), more)
    frames = frames_for(n)
    obs = analyze_in_chunks(an, frames)
    # 4, 8, 12: nobody found yet, not asked; from 16 every 4th frame while the last find
    # (28) is within hold_frames (16): up to 44
    assert [c[0] for c in more.calls] == [0, 16, 20, 24, 28, 32, 36, 40, 44]
    assert an.counts["pose_more_frames"] == 9 and an.counts["pose_more_heads"] == 4
    by = {o.index: o for o in obs}
    for i in range(n):
        want = 1 if i in (16, 20, 24, 28) else 0
        assert len(by[i].faces) == 1 and len(by[i].head_boxes) == want, i
    assert all(len(c[2]) == 1 for c in more.calls)  # each frame's face head, to black out
    # a new video starts without the last one's find: 36 and 40 are within hold_frames
    # of the last find (28), and are not asked after the reset
    an.reset()
    more.calls.clear()
    an.analyze(frames[36:41], 36)
    an.finish()
    an.close()
    assert more.calls == []


@pytest.mark.parametrize("threaded", [False, True])
def test_a_body_without_a_head_keeps_its_frame_fail_closed(threaded):
    """Pose sees a body whose head it cannot place (legs and hips only): the frame has
    no region for that person and is redacted whole; a further person found beside them
    (or a false one) must not give it a region and lift that."""
    from deid.track.tracker import Planner
    from deid.types import FrameDecision

    class Legs:
        def estimate(self, frames):
            out = []
            for _ in frames:
                kp = np.zeros((1, 17, 3), np.float32)
                kp[0, 11:17] = [[100, 150, 1], [120, 150, 1], [100, 200, 1], [120, 200, 1], [100, 250, 1], [120, 250, 1]]
                out.append(Keypoints(kp, schema="coco17"))
            return out

    n = 20
    more = ScriptedMore()
    cfg = dataclasses.replace(Config().track, worker_threads=threaded, pose_check_every=8, pose_more_every=4)
    an = FrameAnalyzer(ScriptedDetector({}), cfg, Legs(), ScriptedPresence(set()), more)
    an.reset()
    obs = an.analyze(frames_for(n), 0) + an.finish()
    an.close()
    assert more.calls == [] and an.counts["pose_more_frames"] == 0
    assert all(o.person_present and not len(o.head_boxes) for o in obs)
    planner = Planner(cfg, 640, 360)
    planner.add(obs)
    assert all(p.decision == FrameDecision.FAIL_CLOSED for p in planner.finish())


def test_components_build_it_for_the_single_person_pose_model_only():
    from deid.pipeline import Components

    cfg = Config().replace("audit.leak_check=false")
    comp = Components.build(cfg, ["mask"])
    assert isinstance(comp.more_people, MaskedRepeat) and comp.more_people.max_extra == cfg.track.pose_more_people == 2
    assert comp.more_people.estimator is not comp.pose and comp.more_people.estimator.static
    for over in ("track.pose_more_people=0", "track.pose_check_every=0", "track.pose_fallback=false"):
        assert Components.build(cfg.replace(over), ["mask"], detector=comp.detector, presence=comp.presence).more_people is None, over
    # a caller's own pose model: no MediaPipe one beside it
    assert Components.build(cfg, ["mask"], detector=comp.detector, pose=ScriptedPose(set())).more_people is None


def _rgb(path):
    import cv2

    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _iou(a, b):
    from deid.geometry import box_iou

    return float(box_iou(np.asarray([a], np.float32), np.asarray([b], np.float32))[0, 0])


@pytest.fixture(scope="module")
def mediapipe_pose():
    from deid.pose.mediapipe_backend import MediapipePoseEstimator

    first = MediapipePoseEstimator(static=True, keep_outside=True)
    again = MediapipePoseEstimator(static=True, keep_outside=True)
    yield first, again
    first.close()
    again.close()


@pytest.mark.parametrize("photo, extra", [
    ("faces/two_people.jpg", 1),                 # two people side by side
    ("pose/COCO_val2014_000000000241.jpg", 2),   # one standing, two seated
    ("pose/COCO_val2014_000000000338.jpg", 1),   # two people in a kitchen, one small
])
def test_mediapipe_finds_the_people_beside_the_first_on_real_photos(mediapipe_pose, photo, extra):
    """MediaPipe's pose model reports one person; blacked out, the next is found: every
    head placed is a different person's (no overlap with the others), and as many as
    the photo has (each head box checked by eye on the photos when this was written)."""
    first, again = mediapipe_pose
    img = _rgb(media_path(photo))
    (kp,) = first.estimate([img])
    assert len(kp.data) == 1
    more = MaskedRepeat(again, max_extra=3).more(img, kp.data, np.zeros((0, 4)))
    assert len(more) == extra
    heads = [head_box_from_keypoints(p[:17], 0.5) for p in [kp.data[0], *more]]
    assert all(h is not None for h in heads)
    for i in range(len(heads)):
        for j in range(i + 1, len(heads)):
            assert _iou(heads[i], heads[j]) == 0.0, (i, j)


def test_mediapipe_finds_the_seated_person_behind_the_cook(mediapipe_pose):
    """The demo clip (shipped in the repo): on frame 216 the pose model reports the cook;
    with the cook blacked out it finds the person seated at the right."""
    from deid.io import read_frames

    first, again = mediapipe_pose
    (img,) = read_frames(REPO / "demo_media" / "flipping_a_pancake.mp4", [216])
    (kp,) = first.estimate([img])
    assert len(kp.data) == 1 and head_box_from_keypoints(kp.data[0][:17], 0.5)[2] < 330  # the cook
    more = MaskedRepeat(again, max_extra=2).more(img, kp.data, np.zeros((0, 4)))
    assert len(more) == 1
    head = head_box_from_keypoints(more[0][:17], 0.5)
    assert 350 < (head[0] + head[2]) / 2 < 426 and (head[1] + head[3]) / 2 < 160  # seated, right, upper half


def test_the_pipeline_covers_the_heads_more_people_finds(tmp_path):
    """process_video hands the Components' more_people to its analyzer: a further
    person's head it places is in the plan and masked in the output."""
    from deid.io import read_frames
    from deid.pipeline import output_path, process_video
    from deid.testing import fake_components, make_synthetic_video

    clip = make_synthetic_video(tmp_path / "two.mp4", n_frames=36)

    class Beside:
        """One more person, head at (120-140, 10-30) of the 160x120 frame."""

        def __init__(self):
            self.asked: list[int] = []

        def more(self, frame, people, covered):
            self.asked.append(len(self.asked))
            kp = np.zeros((1, 17, 3), np.float32)
            kp[0, :5] = [[130, 22, 1], [127, 18, 1], [133, 18, 1], [124, 20, 1], [136, 20, 1]]
            return kp

    cfg = Config().replace("audit.sample_frames=8", "io.chunk_size=8", "track.lookahead=24", "track.pose_check_every=16",
                           "audit.leak_check=false")
    beside = Beside()
    comp = fake_components(cfg, ["mask"], more_people=beside)
    res = process_video(clip.path, tmp_path / "o", ["mask"], cfg, components=comp, keep_plans=True)
    assert res.status == "done", res.error
    # the checks (0, 16, 32) and, the person being found each time, every 4th frame between
    assert len(beside.asked) == 9 and res.counts["pose_more_heads"] == 9
    for p in res.plans:
        assert any(f.box[0] < 130 < f.box[2] and f.box[1] < 22 < f.box[3] for f in p.faces), p.index
    out = read_frames(output_path(clip.path, tmp_path / "o", "mask"))
    assert all(f[18:26, 126:134].max() < 24 for f in out)  # masked black (mask.color), up to the codec
    # without it the corner is left as it was
    res0 = process_video(clip.path, tmp_path / "n", ["mask"], cfg, components=fake_components(cfg, ["mask"]))
    assert res0.status == "done"
    assert not any(f[18:26, 126:134].max() < 24 for f in read_frames(output_path(clip.path, tmp_path / "n", "mask")))


def test_adding_a_swap_keeps_every_other_component():
    """The batch and the Ray render actors add a patient's swap to the shared components:
    every field must carry over (a positional rebuild once dropped more_people, which
    switched the search off for any run with a swap)."""
    import dataclasses

    from deid.pipeline import Components

    base = Components(Config(), detector="det", pose="pose", presence="presence", anonymizers={"blur": "b"},
                      identity="id", more_people="more")
    with_swap = base.with_anonymizer("swap", "swap-anon")
    assert with_swap.anonymizers == {"blur": "b", "swap": "swap-anon"} and base.anonymizers == {"blur": "b"}
    for f in dataclasses.fields(Components):
        if f.name != "anonymizers":
            assert getattr(with_swap, f.name) is getattr(base, f.name), f.name
    # the two places that add a swap go through it
    import inspect

    import deid.batch
    import ray_jobs.stages

    for mod in (deid.batch, ray_jobs.stages):
        src = inspect.getsource(mod)
        assert 'with_anonymizer("swap"' in src and "Components(" not in src.replace("Components.build(", ""), mod.__name__
