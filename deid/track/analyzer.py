"""Per-frame evidence gathering: face detector first, body keypoints where it misses,
person segmentation where both miss. Produces :class:`Observation` rows for the planner."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple, Sequence

import numpy as np

from ..config import TrackConfig
from ..protocols import FaceDetector, PoseEstimator
from ..detect.base import detect_indexed
from .boxes import head_box_from_keypoints
from .tracker import Observation

log = logging.getLogger(__name__)


class FrameAnalyzer:
    """``analyze(frames, start) -> list[Observation]`` for consecutive frames, then
    ``finish()`` for the observations still pending at the end of the video.

    Pose runs only on frames where the face detector found nothing (every
    ``pose_stride``-th such frame), so videos where faces are found cost nothing extra;
    and not in the first ``pose_skip_after_face`` frames after a face detection, which
    the tracker's hold covers whatever happens next.

    With ``keyframe_every`` = k > 1 the models run on keyframes only (every k-th frame of
    the video, the first frame after ``reset()`` and the last one), and each run of
    frames between two keyframes is resolved when its closing keyframe is known: if the
    two keyframes agree (:meth:`_agree`: the same number of faces and of pose-placed
    heads, pairwise overlapping by ``keyframe_iou``, the same presence) the frames
    between are left to the tracker, which interpolates the boxes across them; if they
    disagree (a face appeared, vanished, moved fast, the detector flickered) every frame
    between is analysed. So what keyframes save is bounded to frames whose neighbours
    k frames apart tell the same story; a face that appears and vanishes entirely
    between two keyframes (fewer than k frames) is the residual risk, which the
    benchmark's recall comparison measures. Observations therefore lag the input by up
    to k - 1 frames.

    With ``more_people`` (:class:`deid.track.people.MaskedRepeat`, for a single-person
    pose model) the pose checks also look for further people with the ones found
    blacked out, and once one is found on every ``pose_more_every``-th frame with faces
    or pose too while someone keeps being found (:meth:`_more_people_at`); their heads
    join the frame's pose heads. Not where pose sees a body whose head it cannot place:
    that frame stays without a region for that person (fail-closed).

    With ``worker_threads`` (the default) the pose and presence models run in a worker
    thread beside the face detector, and a composite detector's sparse members in
    another (see :meth:`_start`); with k = 1 a batch whose
    frames went to the worker is returned by the next ``analyze`` call (or ``finish``),
    so the worker overlaps the next batch's decoding and detection. Call ``close()``
    when done with the analyzer."""

    def __init__(
        self,
        detector: FaceDetector,
        cfg: TrackConfig,
        pose: PoseEstimator | None = None,
        presence: Any | None = None,
        more_people: Any | None = None,
    ):
        self.detector = detector
        self.cfg = cfg
        self.pose = pose
        self.presence = presence
        #: :class:`deid.track.people.MaskedRepeat` (or None): further people at the pose
        #: checks, for a single-person pose model
        self.more_people = more_people
        self._pool: ThreadPoolExecutor | None = None  # the pose / presence worker (track.worker_threads)
        self._inflight: _Pending | None = None
        self.counts = {"pose_runs": 0, "presence_runs": 0, "pose_skipped_held": 0, "keyframes": 0, "keyframe_gap_frames_skipped": 0, "keyframe_gap_frames_analysed": 0, "pose_checks": 0, "pose_more_frames": 0, "pose_more_heads": 0}
        self._reset_state()

    def _reset_state(self) -> None:
        self._missed = 0
        self._faces: set[int] = set()  # recent frames with a face detection
        self._held: set[int] = set()  # frames whose empty observation the hold covers
        self._key: Observation | None = None  # the last keyframe's observation
        self._pending: list[tuple[int, np.ndarray]] = []  # frames after it, unresolved
        self._inflight = None  # keyframe_every = 1 with worker_threads: the batch the worker is on
        self._more_found_at: int | None = None  # (worker) the last frame where more_people found someone

    # -- public ---------------------------------------------------------------------

    def analyze(self, frames: Sequence[np.ndarray], start: int) -> list[Observation]:
        k = self.cfg.keyframe_every
        if k <= 1:
            pend = self._start(list(frames), list(range(start, start + len(frames))))
            self._held.clear()
            self._faces = {i for i in self._faces if i >= start + len(frames) - self.cfg.pose_skip_after_face - 1}
            if not self.cfg.worker_threads:
                return self._collect(pend)
            # the worker finishes this batch's pose / presence while the caller reads
            # and detects the next one: return the previous batch's observations (and
            # this one's too when it gave the worker nothing to do)
            prev, self._inflight = self._inflight, None
            out = self._collect(prev) if prev is not None else []
            if pend.jobs:
                self._inflight = pend
                return out
            return out + self._collect(pend)
        out: list[Observation] = []
        items = list(zip(range(start, start + len(frames)), frames))
        keys = [j for j, (i, _) in enumerate(items) if i % k == 0 or (j == 0 and self._key is None)]
        key_obs = self._observe([items[j][1] for j in keys], [items[j][0] for j in keys])
        self.counts["keyframes"] += len(keys)
        prev = 0
        for j, o in zip(keys, key_obs):
            self._pending.extend(items[prev:j])
            prev = j + 1
            out.extend(self._close(o))
        self._pending.extend(items[prev:])
        return out

    def finish(self) -> list[Observation]:
        """The observations still pending at the end of the video: the last batch's
        (``worker_threads``), the frames after the last keyframe (the video's last frame
        becomes a keyframe). Call once at the end of the video, before the planner's
        ``finish``."""
        if self._inflight is not None:
            prev, self._inflight = self._inflight, None
            return self._collect(prev)
        if not self._pending:
            return []
        i, frame = self._pending.pop()
        (o,) = self._observe([frame], [i])
        self.counts["keyframes"] += 1
        return self._close(o)

    def reset(self) -> None:
        if self._inflight is not None:  # let the worker finish before the models reset
            for job in self._inflight.jobs:
                job.exception()
        self._reset_state()
        if hasattr(self.detector, "reset"):
            self.detector.reset()
        if self.pose is not None and hasattr(self.pose, "reset"):
            self.pose.reset()

    def close(self) -> None:
        """Stop the worker thread after its queued jobs (a later call starts a new one)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # -- keyframes ------------------------------------------------------------------

    def _close(self, key: Observation) -> list[Observation]:
        """Resolve the frames pending between the previous keyframe and ``key``; returns
        their observations followed by ``key``'s."""
        gap, self._pending = self._pending, []
        out: list[Observation] = []
        if gap:
            prev = self._key
            if prev is not None and self._agree(prev, key):
                present = prev.person_present or key.person_present
                out = [Observation(i, person_present=present) for i, _ in gap]
                self.counts["keyframe_gap_frames_skipped"] += len(gap)
            else:
                out = self._observe([f for _, f in gap], [i for i, _ in gap])
                self.counts["keyframe_gap_frames_analysed"] += len(gap)
        self._key = key
        horizon = key.index - max(self.cfg.pose_skip_after_face, 1)
        self._held = {i for i in self._held if i >= key.index}
        self._faces = {i for i in self._faces if i >= horizon}
        return out + [key]

    def _is_held(self, index: int) -> bool:
        """A face was detected in the ``pose_skip_after_face`` frames before ``index``
        (the tracker's hold covers this frame whatever the models say)."""
        m = min(self.cfg.pose_skip_after_face, self.cfg.hold_frames)
        return any(index - d in self._faces for d in range(1, m + 1))

    def _agree(self, a: Observation, b: Observation) -> bool:
        """Do two keyframes tell the same story, so the frames between need no models?"""
        if a.person_present != b.person_present:
            return False
        for o in (a, b):
            # a person with no region: the frames between may be where a face is found
            if o.person_present and not len(o.faces) and not len(o.head_boxes) and o.index not in self._held:
                return False
        if (a.index in self._held) != (b.index in self._held):
            return False
        return _matched(a.faces.boxes, b.faces.boxes, self.cfg.keyframe_iou) and _matched(
            a.head_boxes, b.head_boxes, self.cfg.keyframe_iou
        )

    # -- models ---------------------------------------------------------------------

    def _observe(self, frames: list[np.ndarray], indices: list[int]) -> list[Observation]:
        """Run the models on ``frames`` (frame numbers ``indices``, ascending)."""
        return self._collect(self._start(frames, indices))

    def _start(self, frames: list[np.ndarray], indices: list[int]) -> "_Pending":
        """Run the face detector on ``frames``, a few at a time, and hand the frames it
        missed to the pose and presence models; :meth:`_collect` gathers the result.

        With ``track.worker_threads`` the pose and presence models run in one worker thread
        that works through the missed frames in frame order while the detector moves on
        (to the next group of frames, and with ``keyframe_every`` = 1 to the next batch:
        :meth:`analyze` returns the previous batch's observations). MediaPipe's graphs
        run single-threaded and release the GIL, so on a multi-core CPU the two overlap.
        A composite detector's sparse members (CenterFace every 8th frame) start on
        the batch's frames in their own thread first (``prefetch``), and the detector
        collects their results when it reaches those frames.
        Each model sees the same frames in the same order as without the threads, so the
        observations are identical; only the wall time differs."""
        n = len(frames)
        pend = _Pending(list(indices), [None] * n)
        if not n:
            return pend
        step = _GROUP if self.cfg.worker_threads else n
        if self.cfg.worker_threads and hasattr(self.detector, "prefetch"):
            self.detector.prefetch(frames, indices)  # sparse detectors start in their own thread
        for s in range(0, n, step):
            group = range(s, min(n, s + step))
            dets = detect_indexed(self.detector, [frames[i] for i in group], [indices[i] for i in group])
            if len(dets) != len(group):
                raise RuntimeError(
                    f"detector {getattr(self.detector, 'name', '?')} returned {len(dets)} results for {len(group)} frames"
                )
            need_pose, need_presence = self._decide(group, dets, indices, pend.obs)
            more = self._more_people_at(group, need_pose, indices, pend.obs, frames)
            if not need_pose and not more and not (need_presence and self.presence is not None):
                continue
            self.counts["pose_runs"] += len(need_pose)
            checks = frozenset(i for i in need_pose if pend.obs[i] is not None)
            args = ([frames[i] for i in need_pose], need_pose, [frames[i] for i in need_presence], need_presence, checks, more)
            if self.cfg.worker_threads:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deid-pose")
                pend.jobs.append(self._pool.submit(self._fallback_models, *args))
            else:
                done: Future = Future()
                done.set_result(self._fallback_models(*args))
                pend.jobs.append(done)
        return pend

    def _collect(self, pend: "_Pending") -> list[Observation]:
        """Wait for ``pend``'s pose and presence results; its observations in order."""
        head: dict[int, np.ndarray] = {}
        pose_found: dict[int, bool] = {}
        present: dict[int, bool] = {}
        for job in pend.jobs:
            h, found, pres, (n_asked, n_more) = job.result()
            head.update(h)
            pose_found.update(found)
            present.update(pres)
            self.counts["presence_runs"] += len(pres)
            self.counts["pose_more_frames"] += n_asked
            self.counts["pose_more_heads"] += n_more
        out = []
        for i, o in enumerate(pend.obs):
            if o is None:
                o = Observation(
                    pend.indices[i],
                    head_boxes=head.get(i, np.zeros((0, 4), np.float32)),
                    person_present=pose_found.get(i, False) or present.get(i, False),
                    pose_ran=i in pose_found,
                )
            elif i in head:  # a pose check on a frame with faces: heads no face accounts for
                extra = _heads_without_face(head[i], o.faces.boxes, self.cfg)
                o = Observation(o.index, o.faces, head_boxes=extra, person_present=True, pose_ran=True)
            out.append(o)
        return out

    def _decide(
        self, group: range, dets: list, indices: list[int], obs: list[Observation | None]
    ) -> tuple[list[int], list[int]]:
        """Fill ``obs`` for the frames of ``group`` the detector (or the hold) settles;
        return the positions that need the pose model, and those that need only the
        presence model (pose not run there)."""
        need_pose: list[int] = []
        need_presence: list[int] = []
        pose_on = self.cfg.pose_fallback and self.pose is not None
        every = self.cfg.pose_check_every
        for i, d in zip(group, dets):
            idx = indices[i]
            if len(d):
                obs[i] = Observation(idx, d, person_present=True)
                self._missed = 0
                self._faces.add(idx)
                if pose_on and every > 0 and idx % every == 0:
                    # faces were found, but maybe not everyone's: a person beside them
                    # whose face the detector missed would otherwise get no region and,
                    # the frame having regions, no fail-closed redaction either
                    need_pose.append(i)
                    self.counts["pose_checks"] += 1
                continue
            held = self._is_held(idx)
            if held:
                if pose_on:
                    self.counts["pose_skipped_held"] += 1
                obs[i] = Observation(idx, person_present=True)  # the hold covers it
                self._held.add(idx)
                continue
            if pose_on and self._missed % self.cfg.pose_stride == 0:
                need_pose.append(i)
            else:
                need_presence.append(i)
            self._missed += 1
        return need_pose, need_presence

    def _more_people_at(
        self, group: range, need_pose: list[int], indices: list[int], obs: list[Observation | None], frames: list[np.ndarray]
    ) -> dict[int, "_MoreAsk"]:
        """Where :attr:`more_people` looks for further people among the ``group``'s
        positions: on the pose checks' cadence (every ``pose_check_every``-th frame of the
        video) wherever pose runs, always; and on every ``pose_more_every``-th frame
        that has faces or runs pose, while a further person was found within
        ``hold_frames`` frames (the worker decides, in frame order): a second person is
        followed while they are in view instead of held still between two checks. Each
        with the head regions its faces already have (blacked out too)."""
        every, dense = self.cfg.pose_check_every, self.cfg.pose_more_every
        if self.more_people is None or every <= 0:
            return {}
        posing = set(need_pose)
        out: dict[int, _MoreAsk] = {}
        for i in group:
            idx = indices[i]
            always = i in posing and idx % every == 0
            has_faces = obs[i] is not None and len(obs[i].faces) > 0
            if not always and not (dense > 0 and idx % dense == 0 and (i in posing or has_faces)):
                continue
            faces = obs[i].faces.boxes if obs[i] is not None else np.zeros((0, 4), np.float32)
            out[i] = _MoreAsk(_face_heads(faces, self.cfg), idx, always, None if i in posing else frames[i])
        return out

    def _body_seen(self, person: np.ndarray) -> bool:
        """A quarter of the person's COCO-17 points are confident: someone is there."""
        return float(np.mean(np.asarray(person)[:17, 2] >= self.cfg.pose_min_score)) >= 0.25

    def _head_boxes(self, people: Any) -> list[np.ndarray]:
        """The head boxes that can be placed for ``people`` (keypoints), in order."""
        return [b for b in (head_box_from_keypoints(p, self.cfg.pose_min_score) for p in people) if b is not None]

    def _fallback_models(
        self, pose_frames: list[np.ndarray], need_pose: list[int], presence_frames: list[np.ndarray], need_presence: list[int],
        checks: frozenset[int] = frozenset(), more: dict[int, "_MoreAsk"] | None = None,
    ) -> tuple[dict[int, np.ndarray], dict[int, bool], dict[int, bool], tuple[int, int]]:
        """Pose on the ``need_pose`` frames, then presence on those where pose found no
        one and on the ``need_presence`` frames (positions in the batch); at the ``more``
        positions also :attr:`more_people` (further people beside those pose found and
        the given face heads; the conditional ones only while a further person was
        found within ``hold_frames`` frames). Returns heads, pose found someone,
        presence, and (frames more_people looked at, people it found). May run in the
        worker thread: of the analyzer's state it touches only ``_more_found_at``, which
        nothing else touches while a job may run (``reset`` waits for them); the pose,
        presence and more-people models nothing else calls meanwhile."""
        head: dict[int, np.ndarray] = {}
        found: dict[int, bool] = {}
        more = more or {}
        kps = self.pose.estimate(pose_frames) if need_pose else []
        kp_at = dict(zip(need_pose, kps))
        frame_at = dict(zip(need_pose, pose_frames))
        # each pose person's head box (None where it cannot be placed)
        own = {i: [head_box_from_keypoints(p, self.cfg.pose_min_score) for p in kp.data] for i, kp in kp_at.items()}
        extra_at: dict[int, np.ndarray] = {}
        n_asked = n_more = 0
        for i in sorted(more, key=lambda j: more[j].index):  # frame order: the follow-up rule depends on it
            q = more[i]
            last = self._more_found_at
            if not q.always and (last is None or abs(q.index - last) > self.cfg.hold_frames):
                continue
            if i in kp_at and any(self._body_seen(p) and h is None for p, h in zip(kp_at[i].data, own[i])):
                # pose sees a body whose head it cannot place: the frame is fail-closed
                # (no region for that person); a further person's head, or a false one,
                # must not turn it into a frame with regions
                continue
            people = kp_at[i].data if i in kp_at else np.zeros((0, 17, 3), np.float32)
            extra = self.more_people.more(frame_at[i] if i in frame_at else q.frame, people, q.covered)
            n_asked += 1
            if len(extra):
                extra_at[i] = extra
                n_more += len(extra)
                self._more_found_at = q.index
        for i in extra_at:
            if i not in kp_at:  # a frame with faces, pose not run: only the further people's heads
                head[i] = np.asarray(self._head_boxes(extra_at[i]), np.float32).reshape(-1, 4)
                found[i] = True
        for i, kp in kp_at.items():
            extra = extra_at.get(i, ())
            boxes = [b for b in own[i] if b is not None] + self._head_boxes(extra)
            found[i] = any(self._body_seen(p) for p in (*kp.data, *extra)) or bool(boxes)
            head[i] = np.asarray(boxes, np.float32).reshape(-1, 4)
        present: dict[int, bool] = {}
        if self.presence is not None:
            # (pose checks on frames with faces need no presence answer: someone is there)
            ask = sorted([(i, f) for i, f in zip(need_pose, pose_frames) if not found[i] and i not in checks]
                         + list(zip(need_presence, presence_frames)),
                         key=lambda t: t[0])
            if ask:
                present = dict(zip([i for i, _ in ask], self.presence.present([f for _, f in ask])))
        return head, found, present, (n_asked, n_more)


_GROUP = 4  # frames per detector call when the pose worker runs beside it


def _face_heads(faces: np.ndarray, cfg: Any) -> np.ndarray:
    """(N, 4) head regions of face boxes, padded as the tracker pads them."""
    from .boxes import pad_face_box

    faces = np.asarray(faces, np.float32).reshape(-1, 4)
    return np.asarray([pad_face_box(f, cfg.pad_side, cfg.pad_top, cfg.pad_bottom) for f in faces], np.float32).reshape(-1, 4)


def _heads_without_face(heads: np.ndarray, faces: np.ndarray, cfg: Any) -> np.ndarray:
    """The pose-placed head boxes that are not the head of a detected face (see
    :func:`deid.track.boxes.same_head`: a neighbour's head overlapping a found face a
    little is kept)."""
    from .boxes import same_head

    heads = np.asarray(heads, np.float32).reshape(-1, 4)
    faces = np.asarray(faces, np.float32).reshape(-1, 4)
    if not len(heads) or not len(faces):
        return heads
    face_heads = _face_heads(faces, cfg)
    keep = [not any(same_head(h, f, fh) for f, fh in zip(faces, face_heads)) for h in heads]
    return heads[np.asarray(keep, bool)]


class _MoreAsk(NamedTuple):
    """A frame where more_people may look: the faces' heads to black out, its frame
    number, whether it looks whatever happened before (the check cadence), and the frame
    when pose does not run there (else pose's frame list has it)."""

    covered: np.ndarray
    index: int
    always: bool
    frame: np.ndarray | None


class _Pending:
    """A batch whose face detection is done and whose pose / presence jobs may still run."""

    def __init__(self, indices: list[int], obs: list[Observation | None]):
        self.indices = indices
        self.obs = obs
        self.jobs: list[Future] = []




def _matched(a: np.ndarray, b: np.ndarray, min_iou: float) -> bool:
    """Same number of boxes, and a one-to-one pairing (greedy by IoU) where every pair
    overlaps by at least ``min_iou``."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    if len(a) != len(b):
        return False
    if not len(a):
        return True
    from ..geometry import box_iou

    iou = box_iou(a, b)
    for _ in range(len(a)):
        r, c = np.unravel_index(int(np.argmax(iou)), iou.shape)
        if iou[r, c] < min_iou:
            return False
        iou[r, :] = -1.0
        iou[:, c] = -1.0
    return True
