"""Tracking, gap filling and fail-closed coverage (see :mod:`deid.track.tracker`)."""

from .analyzer import FrameAnalyzer
from .boxes import head_box_from_keypoints, pad_face_box
from .tracker import Observation, Planner, plan_window

__all__ = ["FrameAnalyzer", "Observation", "Planner", "head_box_from_keypoints", "pad_face_box", "plan_window"]
