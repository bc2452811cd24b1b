"""Box maths for face/head regions (pure numpy)."""

from __future__ import annotations

import numpy as np

from ..detect.base import box_iou

__all__ = ["box_iou", "pad_face_box", "union", "expand", "clip", "area", "center_distance", "interpolate", "head_box_from_keypoints",
           "same_head", "SAME_HEAD_DISTANCE", "ellipses_cover"]


def area(b: np.ndarray) -> float:
    return float(max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]))


def union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])], np.float32)


def expand(b: np.ndarray, frac: float) -> np.ndarray:
    """Grow a box by ``frac`` of its size on every side."""
    w, h = b[2] - b[0], b[3] - b[1]
    return np.array([b[0] - frac * w, b[1] - frac * h, b[2] + frac * w, b[3] + frac * h], np.float32)


def ellipses_cover(boxes: "list[np.ndarray]") -> np.ndarray:
    """The box, centred on the boxes' union and of its proportions, whose inscribed
    ellipse holds every box's inscribed ellipse (the anonymizers draw a region's ellipse:
    two boxes' union alone leaves the corners of diagonally offset ellipses out)."""
    bs = np.asarray(boxes, np.float64).reshape(-1, 4)
    u = np.array([bs[:, 0].min(), bs[:, 1].min(), bs[:, 2].max(), bs[:, 3].max()])
    c, half = (u[:2] + u[2:]) / 2, np.maximum((u[2:] - u[:2]) / 2, 1e-6)
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    ring = np.stack([np.cos(t), np.sin(t)], axis=1)
    k = 1.0
    for b in bs:
        pts = (b[:2] + b[2:]) / 2 + ring * (b[2:] - b[:2]) / 2
        k = max(k, float(np.sqrt((((pts - c) / half) ** 2).sum(axis=1)).max()))
    k *= 1.005  # the ring is sampled: a little margin between its points
    return np.array([*(c - k * half), *(c + k * half)], np.float32)


def clip(b: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.array([np.clip(b[0], 0, width), np.clip(b[1], 0, height), np.clip(b[2], 0, width), np.clip(b[3], 0, height)], np.float32)


def center_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between box centres, in units of the mean box size."""
    ca = np.array([(a[0] + a[2]) / 2, (a[1] + a[3]) / 2])
    cb = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    size = 0.5 * ((a[2] - a[0] + a[3] - a[1]) / 2 + (b[2] - b[0] + b[3] - b[1]) / 2)
    return float(np.linalg.norm(ca - cb) / max(size, 1e-6))


def interpolate(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return ((1.0 - t) * a + t * b).astype(np.float32)


def pad_face_box(box: np.ndarray, pad_side: float, pad_top: float, pad_bottom: float) -> np.ndarray:
    """Grow a detector's face box into a head box (hair, ears, forehead, chin)."""
    w, h = box[2] - box[0], box[3] - box[1]
    return np.array([box[0] - pad_side * w, box[1] - pad_top * h, box[2] + pad_side * w, box[3] + pad_bottom * h], np.float32)


#: a pose-placed head and a detected face's head region are one head when the face's
#: centre lies in the pose head and the two boxes' centres are this close (in mean box
#: sizes, :func:`center_distance`). Measured on the talking heads (MediaPipe pose vs
#: BlazeFace, padded): the same head at most 0.13 apart; the head of someone beside a
#: found face (60 px faces, 15 px between them) about 0.6.
SAME_HEAD_DISTANCE = 0.35


def same_head(head: np.ndarray, face_box: np.ndarray, face_head: np.ndarray, max_distance: float = SAME_HEAD_DISTANCE) -> bool:
    """Whether the pose-placed ``head`` is the head of the detected face ``face_box``
    (whose padded head region is ``face_head``). When in doubt (a neighbour's head that
    overlaps the face a little) the answer is no: both regions are kept."""
    cx, cy = (face_box[0] + face_box[2]) / 2, (face_box[1] + face_box[3]) / 2
    if not (head[0] <= cx <= head[2] and head[1] <= cy <= head[3]):
        return False
    return center_distance(np.asarray(head, np.float32), np.asarray(face_head, np.float32)) <= max_distance


# COCO-17 / wholebody133 body indices
NOSE, L_EYE, R_EYE, L_EAR, R_EAR, L_SHOULDER, R_SHOULDER = 0, 1, 2, 3, 4, 5, 6


def head_box_from_keypoints(kp: np.ndarray, min_score: float = 0.5) -> np.ndarray | None:
    """Place a head box from one person's body keypoints ((K >= 7, 3): x, y, score on
    the COCO-17 / wholebody133 layout).

    Uses the head points (nose, eyes, ears) when two or more are confident, sizing the
    box from the widest of ear-to-ear span, eye span and shoulder width; otherwise
    places it above the shoulders. Points may lie outside the frame (a head cut off
    by the frame edge): the caller clips. Returns None when neither is possible."""
    kp = np.asarray(kp, np.float32)
    if kp.ndim != 2 or kp.shape[0] < 7 or kp.shape[1] < 3:
        raise ValueError(f"keypoints must be (K>=7, 3), got {kp.shape}")
    head = kp[[NOSE, L_EYE, R_EYE, L_EAR, R_EAR]]
    ok = head[:, 2] >= min_score
    sh = kp[[L_SHOULDER, R_SHOULDER]]
    sh_ok = bool(np.all(sh[:, 2] >= min_score))
    shoulder_w = float(np.linalg.norm(sh[0, :2] - sh[1, :2])) if sh_ok else 0.0
    if ok.sum() >= 2:
        pts = head[ok, :2]
        # the head points' spread in both directions: a person lying on their side (or a
        # head seen in profile) stacks nose, eye and ear vertically
        span = float(np.ptp(pts, axis=0).max()) if len(pts) > 1 else 0.0
        ears = head[[3, 4]]
        ear_w = float(np.linalg.norm(ears[0, :2] - ears[1, :2])) if np.all(ears[:, 2] >= min_score) else 0.0
        eyes = head[[1, 2]]
        eye_w = float(np.linalg.norm(eyes[0, :2] - eyes[1, :2])) if np.all(eyes[:, 2] >= min_score) else 0.0
        # nose to a visible ear is about half a head's width, whichever way the head turns
        nose_ear = max((float(np.linalg.norm(head[0, :2] - head[k, :2])) for k in (3, 4)
                        if head[0, 2] >= min_score and head[k, 2] >= min_score), default=0.0)
        size = max(1.5 * ear_w, 3.2 * eye_w, 2.0 * span, 2.0 * nose_ear, 0.55 * shoulder_w)
        if size <= 1.0:
            return None
        cx, cy = float(pts[:, 0].mean()), float(pts[:, 1].mean())
        # head points sit a little below the head's centre (hair above the eyes)
        return np.array([cx - 0.6 * size, cy - 0.75 * size, cx + 0.6 * size, cy + 0.65 * size], np.float32)
    if sh_ok and shoulder_w > 2.0:
        mid = sh[:, :2].mean(axis=0)
        size = 0.8 * shoulder_w
        cy = mid[1] - 0.75 * shoulder_w
        return np.array([mid[0] - 0.6 * size, cy - 0.7 * size, mid[0] + 0.6 * size, cy + 0.7 * size], np.float32)
    return None
