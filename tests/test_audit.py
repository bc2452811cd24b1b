"""Which frames the leak audit re-identifies (deid.audit.audit_pairs): evenly spaced
frames, risk frames, and output frames paired with their own input frames when
fail-closed frames were dropped."""

import numpy as np
import pytest

from deid.audit import FrameRows, audit_pairs
from deid.config import Config

B = [0.0, 0.0, 10.0, 10.0]


def rows_of(spec):
    """spec: one letter a frame — d detected, h held only, i interpolated only, p pose
    only, n nothing (nobody there), x fail-closed."""
    out = []
    for i, c in enumerate(spec):
        if c == "x":
            out.append((i, "fail_closed", True, [], []))
        elif c == "n":
            out.append((i, "ok", False, [], []))
        else:
            src = {"d": ["detected", "held"], "h": ["held"], "i": ["interpolated"], "p": ["pose"]}[c]
            out.append((i, "ok", True, src, [B] * len(src)))
    return FrameRows(out)


def test_uncertain_and_kept_frames():
    r = rows_of("ddhhidpnxxd")
    assert r.uncertain_frames().tolist() == [2, 3, 4, 6]  # a frame with a detection is not uncertain
    assert r.kept_frames().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 10]
    assert FrameRows().uncertain_frames().tolist() == []


def test_risk_frames_are_added_where_regions_rest_on_holds():
    spec = "d" * 40 + "h" * 10 + "d" * 50
    cfg = Config().replace("audit.sample_frames=5", "audit.risk_frames=3").audit
    pairs, risk = audit_pairs(100, 100, cfg, rows_of(spec))
    even = [0, 25, 50, 74, 99]
    got = [j for _, j in pairs]
    assert len(risk) == 3 and all(i == j for i, j in pairs)
    extra = sorted(set(got) - set(even))
    assert len(extra) == 3 and all(40 <= j < 50 for j in extra)
    assert set(even) <= set(got)
    # off, or without the frames' decisions: the evenly spaced frames only
    off = Config().replace("audit.sample_frames=5", "audit.risk_frames=0").audit
    assert [j for _, j in audit_pairs(100, 100, off, rows_of(spec))[0]] == even
    assert [j for _, j in audit_pairs(100, 100, cfg)[0]] == even


def test_dropped_frames_pair_each_output_frame_with_its_own_input_frame():
    spec = "d" * 10 + "x" * 5 + "d" * 10  # frames 10-14 dropped: the output has 20 frames
    cfg = Config().replace("audit.sample_frames=0").audit  # every frame
    pairs, _ = audit_pairs(25, 20, cfg, rows_of(spec), dropped=True)
    assert [j for _, j in pairs] == list(range(20))
    assert [i for i, _ in pairs] == list(range(10)) + list(range(15, 25))
    # not dropped (redacted instead): frame numbers match
    same, _ = audit_pairs(25, 25, cfg, rows_of(spec), dropped=False)
    assert all(i == j for i, j in same) and len(same) == 25
    # risk frames map through the same pairing
    spec2 = "d" * 10 + "x" * 5 + "d" * 5 + "h" * 5
    cfg2 = Config().replace("audit.sample_frames=2", "audit.risk_frames=2").audit
    pairs2, risk2 = audit_pairs(25, 20, cfg2, rows_of(spec2), dropped=True)
    assert len(risk2) == 2 and all((i in range(20, 25)) == (j in range(15, 20)) for i, j in pairs2)
    assert all(i - j == 5 for i, j in pairs2 if j >= 10)


def test_risk_candidates_past_a_short_output_are_ignored():
    cfg = Config().replace("audit.sample_frames=2", "audit.risk_frames=4").audit
    pairs, risk = audit_pairs(30, 20, cfg, rows_of("d" * 18 + "h" * 12))  # a partial output of 20 frames
    assert all(j < 20 for _, j in pairs) and len(risk) == 1  # frame 18 (19 is an evenly spaced one; 20-29 were not written)
    assert np.all(np.diff([j for _, j in pairs]) > 0)


def test_dropped_sample_frames_are_replaced_by_output_frames():
    """When the input's evenly spaced frames are the dropped ones, the audit still checks
    evenly spaced output frames (it checked none: a leak in the frames between was
    published)."""
    cfg = Config().replace("audit.sample_frames=4", "audit.risk_frames=0").audit
    sampled = {0, 33, 66, 99}  # sample_indices(100, 4)
    spec = "".join("x" if i in sampled else "d" for i in range(100))
    pairs, _ = audit_pairs(100, 96, cfg, rows_of(spec), dropped=True)
    assert len(pairs) == 4 and not {i for i, _ in pairs} & sampled
    kept = [i for i in range(100) if i not in sampled]
    assert all(kept[j] == i for i, j in pairs)
    # a partial read that stopped early: the frames that were read, evenly spaced
    partial, _ = audit_pairs(1000, 100, cfg, rows_of("d" * 100), dropped=True)
    assert len(partial) >= 4 and all(i == j < 100 for i, j in partial)


def test_read_frames_of_no_index_reads_nothing(monkeypatch):
    import deid.io.decode as D

    monkeypatch.setattr(D, "iter_frames", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    assert D.read_frames("missing.mp4", []) == []


def test_region_boxes_of_frames():
    r = FrameRows([(0, "ok", True, ["detected"], [[1, 2, 3, 4]]), (1, "ok", False, [], []),
                   (2, "ok", True, ["held", "pose"], [[5, 6, 7, 8], [9, 10, 11, 12]])])
    got = r.region_boxes([2, 1, 0, 7])
    assert sorted(got) == [0, 1, 2]  # frame 7 has no row
    assert got[0].tolist() == [[1, 2, 3, 4]] and got[1].shape == (0, 4)
    assert got[2].tolist() == [[5, 6, 7, 8], [9, 10, 11, 12]]
    assert FrameRows().region_boxes([0]) == {}


def test_risk_frame_null_greys_the_frames_regions(monkeypatch):
    """A frame without a kept plan (a risk frame) is nulled over its regions from the
    frame decisions, not only over dlib's boxes: a null that keeps the face would make
    a real leak look like no more than a blank's match."""
    import deid.audit as A
    from deid.types import Detections

    rng = np.random.default_rng(0)
    frames = {i: rng.integers(0, 255, (60, 80, 3), np.uint8) for i in (3, 5)}
    monkeypatch.setattr(A, "read_frames", lambda path, idx: [frames[i] for i in idx])

    class NoFaces:
        def detect(self, fr):
            return [Detections.empty() for _ in fr]

    monkeypatch.setattr(A, "_hog", lambda max_side=0: NoFaces())
    seen = []

    class Identity:
        def embed(self, fr, boxes):
            seen.append([f.copy() for f in fr])
            return [np.zeros((0, 128), np.float32) for _ in fr]

    rows = FrameRows([(3, "ok", True, ["held"], [[10, 10, 30, 40]]), (5, "ok", True, ["held"], [[40, 20, 70, 50]])])
    A._audit_reference("in.mp4", [3, 5], Identity(), None, 40.0, rows)
    nulls = seen[1]  # embed(inputs), then embed(nulls)
    for f, (x1, y1, x2, y2) in zip(nulls, ([10, 10, 30, 40], [40, 20, 70, 50])):
        patch = f[y1:y2, x1:x2].reshape(-1, 3)
        assert (patch == patch[0]).all()  # greyed to one colour
        assert not np.array_equal(f, frames[3]) and not np.array_equal(f, frames[5])


def test_counts_cover_only_the_frames_compared_when_the_output_reads_short(monkeypatch):
    """A short output read compares fewer frames than were picked: the risk-frame and
    too-small counts are those of the frames compared."""
    import deid.audit as A
    from deid.types import Detections

    frame = np.zeros((60, 80, 3), np.uint8)
    monkeypatch.setattr(A, "read_frames", lambda path, idx: [frame] * (len(idx) if path == "in.mp4" else min(2, len(idx))))

    class TinyFace:  # a 10-px face in every frame: under min_face_px
        def detect(self, fr):
            return [Detections(np.asarray([[5, 5, 15, 15]], np.float32), np.ones(1, np.float32)) for _ in fr]

    monkeypatch.setattr(A, "_hog", lambda max_side=0: TinyFace())

    class Identity:
        def embed(self, fr, boxes):
            return [np.full((len(b), 128), np.nan, np.float32) for b in boxes]

    cfg = Config().replace("audit.sample_frames=5", "audit.risk_frames=3").audit
    rows = rows_of("d" * 40 + "h" * 10 + "d" * 50)
    full = A.leak_audit("in.mp4", "in.mp4", cfg, Identity(), rows=rows, frame_counts=(100, 100))
    assert full["checked_frames"] == 8 and full["risk_frames"] == 3 and full["faces_too_small"] == 8
    short = A.leak_audit("in.mp4", "out.mp4", cfg, Identity(), rows=rows, frame_counts=(100, 100))
    assert short["checked_frames"] == 2 and short["risk_frames"] == 0 and short["faces_too_small"] == 2


def test_threaded_hog_gives_the_single_detectors_results_in_frame_order():
    from pathlib import Path

    from deid.detect.dlib_backend import DlibHogDetector
    from deid.io import read_frames

    clip = Path(__file__).resolve().parents[1] / "demo_media" / "talking_head_1.mp4"
    frames = read_frames(clip, [0, 50, 100, 150, 199])
    frames[2] = np.zeros_like(frames[2])  # one frame without a face, mid-list
    one = DlibHogDetector(upsample=1, max_side=960).detect(frames)
    for n in (2, 3):
        many = DlibHogDetector(upsample=1, max_side=960, threads=n)
        assert many.threads == n
        out = many.detect(frames)
        assert [len(d) for d in out] == [len(d) for d in one] and len(one[2]) == 0 and len(one[0]) == 1
        assert all(np.allclose(a.boxes, b.boxes) and np.allclose(a.scores, b.scores) for a, b in zip(one, out))
        assert many.detect([]) == [] and len(many.detect(frames[:1])) == 1


def test_hog_threads_follow_the_cpus_the_process_may_use(monkeypatch):

    from deid.detect.dlib_backend import DlibHogDetector, auto_threads
    from deid.errors import ConfigError

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # e.g. a Ray task with num_cpus=1
    assert auto_threads() == 1 and DlibHogDetector(threads=0).threads == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert 1 <= auto_threads() <= 2
    with pytest.raises(ConfigError, match="threads"):
        DlibHogDetector(threads=-1)


@pytest.mark.parametrize("cached", [True, False])
def test_a_forked_child_gets_its_own_hog_threads(cached):
    """After os.fork() the parent's thread pool has no thread in the child: the child must
    not reuse it (its detection would wait forever) — neither the audit's cached detector
    nor a detector object the child inherits."""
    import os
    import signal


    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    import deid.audit as A

    from deid.detect.dlib_backend import DlibHogDetector

    frames = [np.zeros((64, 64, 3), np.uint8)] * 4
    det = A._hog if cached else (lambda d=DlibHogDetector(threads=2): d)
    assert len(det().detect(frames)) == 4  # the pool exists now
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 4
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)  # (pytest-timeout's handler would not end it)
            signal.alarm(20)  # a hung child dies of the alarm: the parent sees a signal, not exit 0
            code = 0 if len(det().detect(frames)) == 4 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_long_videos_get_a_denser_audit():
    a = Config().audit  # 24 evenly spaced + up to 8 risk frames, at least 2 a minute
    assert a.for_video(200, 25.0) == a  # an 8-second clip: the fixed counts
    assert a.for_video(12 * 60 * 25, 25.0) == a  # 12 minutes: 24 frames is 2 a minute already
    hour = a.for_video(60 * 60 * 25, 25.0)
    assert (hour.sample_frames, hour.risk_frames) == (120, 40)  # 2 a minute, risk frames in proportion
    assert Config().replace("audit.sample_per_minute=0").audit.for_video(90000, 25.0).sample_frames == 24
    assert Config().replace("audit.sample_frames=0").audit.for_video(90000, 25.0).sample_frames == 0  # 0 = every frame
    assert a.for_video(90000, 0.0) == a  # no frame rate known: the fixed counts
    with pytest.raises(Exception, match="sample_per_minute"):
        Config().replace("audit.sample_per_minute=-1")


@pytest.mark.parametrize("region, missed", [([0, 0, 70, 70], False), ([70, 0, 80, 20], True)])
def test_a_leak_says_whether_its_face_lay_outside_every_region(monkeypatch, region, missed):
    """A leak of a face outside every region is a missed face, and the advice 'raise the
    blur strength' points the wrong way: the record lists such frames apart
    (leak_frames_missed) and the refusal says to check the detection instead."""
    import deid.audit as A
    from deid.pipeline import _advice
    from deid.types import Detections

    frame = np.random.default_rng(1).integers(0, 255, (80, 80, 3), np.uint8)
    monkeypatch.setattr(A, "read_frames", lambda path, idx: [frame.copy() for _ in idx])

    class OneFace:
        def detect(self, fr):
            return [Detections(np.asarray([[5, 5, 55, 55]], np.float32), np.ones(1, np.float32)) for _ in fr]

    monkeypatch.setattr(A, "_hog", lambda max_side=0: OneFace())

    class Identity:  # texture as identity: a greyed (null) face has none
        threshold = 0.6

        def embed(self, fr, boxes):
            return [np.asarray([np.full(128, f[int(b[1]):int(b[3]), int(b[0]):int(b[2])].std() / 255, np.float32) for b in bb],
                               np.float32).reshape(-1, 128) for f, bb in zip(fr, boxes)]

        def distance(self, a, b):
            return np.linalg.norm(np.asarray(a)[:, None] - np.asarray(b)[None], axis=-1)

    cfg = Config().replace("audit.sample_frames=3", "audit.risk_frames=0").audit
    rows = FrameRows([(i, "ok", True, ["detected"], [region]) for i in range(10)])
    rep = A.leak_audit("in.mp4", "out.mp4", cfg, Identity(), rows=rows, frame_counts=(10, 10))
    assert rep["leaks"] == 3
    assert (rep["leak_frames_missed"] == rep["leak_frames"]) is missed and (rep["leak_frames_missed"] == []) is not missed
    advice = _advice("blur", rep)
    assert ("outside every region" in advice) is missed and ("blur.strength" in advice) is not missed
    assert A.covered_fraction(np.asarray([0, 0, 10, 10]), np.asarray([[0, 0, 5, 10], [5, 0, 10, 5]])) == 0.75
