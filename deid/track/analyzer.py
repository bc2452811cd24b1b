"""Per-frame evidence gathering: face detector first, body keypoints where it misses,
person segmentation where both miss. Produces :class:`Observation` rows for the planner."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from ..config import TrackConfig
from ..protocols import FaceDetector, PoseEstimator
from .boxes import head_box_from_keypoints
from .tracker import Observation

log = logging.getLogger(__name__)


class FrameAnalyzer:
    """``analyze(frames, start) -> list[Observation]`` for consecutive frames.

    Pose runs only on frames where the face detector found nothing (every
    ``pose_stride``-th such frame), so videos where faces are found cost nothing extra;
    and not in the first ``pose_skip_after_face`` frames after a face detection, which
    the tracker's hold covers whatever happens next."""

    def __init__(
        self,
        detector: FaceDetector,
        cfg: TrackConfig,
        pose: PoseEstimator | None = None,
        presence: Any | None = None,
    ):
        self.detector = detector
        self.cfg = cfg
        self.pose = pose
        self.presence = presence
        self._missed = 0
        self._since_face = 10**9  # frames since the last face detection
        self.counts = {"pose_runs": 0, "presence_runs": 0, "pose_skipped_held": 0}

    def analyze(self, frames: Sequence[np.ndarray], start: int) -> list[Observation]:
        dets = self.detector.detect(frames)
        if len(dets) != len(frames):
            raise RuntimeError(f"detector {getattr(self.detector, 'name', '?')} returned {len(dets)} results for {len(frames)} frames")
        obs: list[Observation | None] = [None] * len(frames)
        need_pose = []
        for i, d in enumerate(dets):
            if len(d):
                obs[i] = Observation(start + i, d, person_present=True)
                self._missed = 0
                self._since_face = 0
            else:
                self._since_face += 1
                held = self._since_face <= min(self.cfg.pose_skip_after_face, self.cfg.hold_frames)
                if self.cfg.pose_fallback and self.pose is not None:
                    if held:
                        self.counts["pose_skipped_held"] += 1
                    elif self._missed % self.cfg.pose_stride == 0:
                        need_pose.append(i)
                if held:
                    obs[i] = Observation(start + i, person_present=True)  # the hold covers it
                    continue
                self._missed += 1
        head: dict[int, np.ndarray] = {}
        pose_found: dict[int, bool] = {}
        if need_pose:
            kps = self.pose.estimate([frames[i] for i in need_pose])
            self.counts["pose_runs"] += len(need_pose)
            for i, kp in zip(need_pose, kps):
                boxes = []
                for person in kp.data:
                    b = head_box_from_keypoints(person, self.cfg.pose_min_score)
                    if b is not None:
                        boxes.append(b)
                body_seen = bool(len(kp.data)) and any(
                    float(np.mean(p[:17, 2] >= self.cfg.pose_min_score)) >= 0.25 for p in kp.data
                )
                pose_found[i] = body_seen or bool(boxes)
                head[i] = np.asarray(boxes, np.float32).reshape(-1, 4)
        need_presence = [i for i in range(len(frames)) if obs[i] is None and not pose_found.get(i, False)]
        present: dict[int, bool] = {}
        if need_presence and self.presence is not None:
            flags = self.presence.present([frames[i] for i in need_presence])
            self.counts["presence_runs"] += len(need_presence)
            present = dict(zip(need_presence, flags))
        for i in range(len(frames)):
            if obs[i] is not None:
                continue
            hb = head.get(i, np.zeros((0, 4), np.float32))
            obs[i] = Observation(
                start + i,
                head_boxes=hb,
                person_present=pose_found.get(i, False) or present.get(i, False),
                pose_ran=i in pose_found,
            )
        return [o for o in obs if o is not None]

    def reset(self) -> None:
        self._missed = 0
        self._since_face = 10**9
        if hasattr(self.detector, "reset"):
            self.detector.reset()
        if self.pose is not None and hasattr(self.pose, "reset"):
            self.pose.reset()
