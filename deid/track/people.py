"""More people from a single-person pose model: black out everyone found so far and run
it again.

MediaPipe pose (the default fallback) reports one person a frame, the most prominent. At
a pose check (``track.pose_check_every``) that person is usually the one whose face was
already found, so a second person whose face the detectors miss would get no head region
and, the frame having regions, no fail-closed redaction either. :class:`MaskedRepeat`
fills the found people's bodies and the found faces' heads with black and asks the model
again (in still-image mode, beside the tracking one), ``max_extra`` times or until it
finds no one new. Measured on the demo pancake clip: with the cook blacked out, the
person seated in the background was found on frames where the unmasked frame gave only
the cook (tests/test_more_people.py; what it costs and what it misses: README,
Limitations).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .boxes import head_box_from_keypoints

__all__ = ["MaskedRepeat", "person_box", "body_below"]

#: margin around a person's keypoint box, as a fraction of its larger side: limbs and
#: clothes reach past the points, and a person left half-visible would be found again
_MARGIN = 0.15


def person_box(kp: np.ndarray, min_score: float, width: int, height: int) -> np.ndarray | None:
    """The box to black out for one person's keypoints ((K, 3), wholebody or COCO
    order): their confident points plus a margin, grown to hold their head box; clipped
    to the frame. None when too few points are confident to place it."""
    kp = np.asarray(kp, np.float32)
    ok = kp[:, 2] >= min_score
    if ok.sum() < 2:
        return None
    pts = kp[ok, :2]
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    m = _MARGIN * max(float(x1 - x0), float(y1 - y0), 1.0)
    box = np.array([x0 - m, y0 - m, x1 + m, y1 + m], np.float32)
    head = head_box_from_keypoints(kp[:17], min_score)
    if head is not None:
        box[:2] = np.minimum(box[:2], head[:2])
        box[2:] = np.maximum(box[2:], head[2:])
    box[[0, 2]] = np.clip(box[[0, 2]], 0, width)
    box[[1, 3]] = np.clip(box[[1, 3]], 0, height)
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return None
    return box


def body_below(head: np.ndarray, width: int, height: int) -> np.ndarray:
    """The box to black out for a person known only by their head box (a found face,
    padded): the head and the upper body below it, three heads wide and four heads tall
    in all, clipped. With the head alone blacked out the model finds that person's body
    and guesses a head on their chest (seen on a COCO photo)."""
    x0, y0, x1, y1 = (float(v) for v in head)
    hw, hh = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    box = np.array([cx - 1.5 * hw, y0, cx + 1.5 * hw, y1 + 3.0 * hh], np.float32)
    box[[0, 2]] = np.clip(box[[0, 2]], 0, width)
    box[[1, 3]] = np.clip(box[[1, 3]], 0, height)
    return box


def _inside(point: np.ndarray, boxes: list[np.ndarray]) -> bool:
    return any(b[0] <= point[0] <= b[2] and b[1] <= point[1] <= b[3] for b in boxes)


class MaskedRepeat:
    """``more(frame, people, covered) -> (Q, K, 3)``: further people in ``frame`` beside
    ``people`` ((P, K, 3) keypoints found so far) and the people known by their head
    boxes only (``covered``, (N, 4): the found faces, padded; :func:`body_below`), from ``estimator`` (a single-person pose
    estimator in still-image mode, used only here: it must not share a tracking state).

    Each round blacks out every known person's :func:`person_box` and :func:`body_below`
    and runs the estimator; a person whose head lands inside a blacked-out box is the
    model finding a known person again (an arm left outside the margin), and ends the
    search. Nothing known, nothing to black out: the frame the caller's model saw is the
    same, so no round runs."""

    def __init__(self, estimator: Any, max_extra: int = 1, min_score: float = 0.5):
        if max_extra < 1:
            raise ValueError("max_extra must be >= 1")
        self.estimator = estimator
        self.max_extra = int(max_extra)
        self.min_score = float(min_score)
        self.runs = 0  # estimator calls (rounds), for the counts

    def more(self, frame: np.ndarray, people: np.ndarray, covered: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        people = np.asarray(people, np.float32)
        k = people.shape[1] if people.ndim == 3 and len(people) else 133
        boxes = [b for b in (person_box(p, self.min_score, w, h) for p in people) if b is not None]
        boxes += [body_below(b, w, h) for b in np.asarray(covered, np.float32).reshape(-1, 4)]
        found: list[np.ndarray] = []
        if not boxes:
            return np.zeros((0, k, 3), np.float32)
        masked = np.array(frame, copy=True)
        blacked: list[np.ndarray] = []
        for _ in range(self.max_extra):
            for b in boxes:
                x0, y0 = int(np.floor(max(b[0], 0))), int(np.floor(max(b[1], 0)))
                x1, y1 = int(np.ceil(min(b[2], w))), int(np.ceil(min(b[3], h)))
                masked[y0:y1, x0:x1] = 0
            blacked += boxes
            self.runs += 1
            (kp,) = self.estimator.estimate([masked])
            new = [p for p in np.asarray(kp.data, np.float32)]
            if not new:
                break
            p = new[0]
            head = head_box_from_keypoints(p[:17], self.min_score)
            if head is None or _inside(((head[0] + head[2]) / 2, (head[1] + head[3]) / 2), blacked):
                break  # no head to place, or a known person found again
            found.append(p)
            b = person_box(p, self.min_score, w, h)
            if b is None:
                break
            boxes = [b]
        if not found:
            return np.zeros((0, k, 3), np.float32)
        return np.stack(found)
