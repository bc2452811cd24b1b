"""OpenPose (Cao et al., "OpenPose: Realtime Multi-Person 2D Pose Estimation using Part
Affinity Fields", TPAMI 2019) through ``cv2.dnn`` — the pose model the paper evaluated with.

The network is the user's (weights cannot be fetched here): the CMU Caffe files
(``pose_deploy.prototxt`` + ``pose_iter_584000.caffemodel`` for BODY_25,
``pose_deploy_linevec.prototxt`` + ``pose_iter_440000.caffemodel`` for COCO) or an ONNX
export of either. The layout is recognised from the output's channel count: BODY_25 has
78 (25 part heatmaps + background + 26 limbs x 2 PAF components), COCO 57 (18 + 1 + 19 x 2).
Heatmaps come first, then PAFs, as in OpenPose's own ``net_output`` blob.

Everything after the forward pass is written here, following the paper and OpenPose's
published defaults (src/openpose/pose/poseParameters.cpp):

1. input: keep the aspect ratio, height ``input_height`` (368), width rounded to a
   multiple of 16, image at the top-left and black padding; BGR scaled to [-0.5, 0.5)
   (x / 256 - 0.5, OpenPose's body normalisation);
2. output maps are upsampled (cubic) by the network stride 8 back to the input size;
3. part candidates: 3x3 local maxima of each heatmap above ``nms_threshold`` (0.05),
   refined to sub-pixel with a log-parabola (OpenPose uses a weighted mean, which is
   biased toward the pixel centre by up to half a pixel);
4. limb candidates: the line integral of the limb's PAF along the segment between two
   part candidates, sampled at 5..25 points depending on its length; a pair is a
   candidate when >= ``inter_min_above`` (95 %) of the samples have PAF . unit(limb) >
   ``inter_threshold`` (0.05), scored by the mean of those samples;
5. greedy assembly: per limb, strongest pairs first, each part candidate used once;
   limbs join people by their shared parts; two partial people sharing a limb merge
   when they do not both have the same part. The two redundant ear-shoulder limbs never
   start a new person;
6. people with fewer than ``min_parts`` (3) parts or a mean score (parts + limbs) below
   ``min_person_score`` (0.4) are dropped.

Output: wholebody133 (neck and mid-hip have no counterpart and are dropped; BODY_25's
big toe, small toe and heel go to the feet block), scores = heatmap peak values.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .._dnn import NetsBySize
from ..errors import ModelWeightsError, one_line
from ..types import Keypoints
from .base import check_extra_kwargs, check_frames, empty, finalize, to_wholebody

__all__ = [
    "OpenPoseEstimator",
    "OpenPoseLayout",
    "BODY_25",
    "COCO_18",
    "layout_for_channels",
    "find_peaks",
    "upsample_maps",
    "score_limb",
    "assemble_people",
    "parse_maps",
]

ENV_MODEL = "DEID_OPENPOSE_MODEL"
ENV_PROTO = "DEID_OPENPOSE_PROTO"
STRIDE = 8


@dataclass(frozen=True)
class OpenPoseLayout:
    """One OpenPose model family: its parts, limbs and where each limb's PAF lives."""

    name: str
    num_parts: int  # without the background channel
    pairs: tuple[tuple[int, int], ...]  # limbs as (part a, part b)
    paf: tuple[tuple[int, int], ...]  # (x channel, y channel) of each limb, counted from the first PAF channel
    to_wholebody: tuple[int, ...]  # wholebody133 index of each part (-1 = none)
    # limbs that only add confidence to parts already joined through the tree; they never
    # start a new person (OpenPose's shoulder-ear limbs)
    redundant: tuple[tuple[int, int], ...] = ()

    @property
    def channels(self) -> int:
        return self.num_parts + 1 + 2 * len(self.pairs)


def _pairs(flat: Sequence[int]) -> tuple[tuple[int, int], ...]:
    return tuple((int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2))


# From OpenPose's poseParameters.cpp (POSE_BODY_PART_PAIRS, POSE_MAP_INDEX) and the part
# lists POSE_BODY_25_BODY_PARTS / POSE_COCO_BODY_PARTS.
# BODY_25 parts: 0 nose, 1 neck, 2 r_shoulder, 3 r_elbow, 4 r_wrist, 5 l_shoulder, 6 l_elbow,
# 7 l_wrist, 8 mid_hip, 9 r_hip, 10 r_knee, 11 r_ankle, 12 l_hip, 13 l_knee, 14 l_ankle,
# 15 r_eye, 16 l_eye, 17 r_ear, 18 l_ear, 19 l_big_toe, 20 l_small_toe, 21 l_heel,
# 22 r_big_toe, 23 r_small_toe, 24 r_heel.
BODY_25 = OpenPoseLayout(
    name="BODY_25",
    num_parts=25,
    pairs=_pairs([1, 8, 1, 2, 1, 5, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9, 10, 10, 11, 8, 12, 12, 13, 13, 14, 1, 0,
                  0, 15, 15, 17, 0, 16, 16, 18, 2, 17, 5, 18, 14, 19, 19, 20, 14, 21, 11, 22, 22, 23, 11, 24]),
    paf=_pairs([0, 1, 14, 15, 22, 23, 16, 17, 18, 19, 24, 25, 26, 27, 6, 7, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13,
                30, 31, 32, 33, 36, 37, 34, 35, 38, 39, 20, 21, 28, 29, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49,
                50, 51]),
    to_wholebody=(0, -1, 6, 8, 10, 5, 7, 9, -1, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, 17, 18, 19, 20, 21, 22),
    redundant=((2, 17), (5, 18)),
)
# COCO parts: 0 nose, 1 neck, 2 r_shoulder, 3 r_elbow, 4 r_wrist, 5 l_shoulder, 6 l_elbow,
# 7 l_wrist, 8 r_hip, 9 r_knee, 10 r_ankle, 11 l_hip, 12 l_knee, 13 l_ankle, 14 r_eye,
# 15 l_eye, 16 r_ear, 17 l_ear.
COCO_18 = OpenPoseLayout(
    name="COCO",
    num_parts=18,
    pairs=_pairs([1, 2, 1, 5, 2, 3, 3, 4, 5, 6, 6, 7, 1, 8, 8, 9, 9, 10, 1, 11, 11, 12, 12, 13, 1, 0, 0, 14,
                  14, 16, 0, 15, 15, 17, 2, 16, 5, 17]),
    paf=_pairs([12, 13, 20, 21, 14, 15, 16, 17, 22, 23, 24, 25, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 28, 29,
                30, 31, 34, 35, 32, 33, 36, 37, 18, 19, 26, 27]),
    to_wholebody=(0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3),
    redundant=((2, 16), (5, 17)),
)

_LAYOUTS = {BODY_25.channels: BODY_25, COCO_18.channels: COCO_18}
assert BODY_25.channels == 78 and COCO_18.channels == 57


def layout_for_channels(channels: int) -> OpenPoseLayout:
    try:
        return _LAYOUTS[int(channels)]
    except KeyError:
        raise ModelWeightsError(
            f"OpenPose network output has {channels} channels; expected 78 (BODY_25) or 57 (COCO). "
            "Use the CMU BODY_25 or COCO model (Caffe prototxt + caffemodel, or an ONNX export of them)."
        ) from None


# ----------------------------------------------------------------------------- parsing (pure)


def find_peaks(heatmap: np.ndarray, threshold: float) -> np.ndarray:
    """Local maxima (3x3) of one heatmap above ``threshold``: (N, 3) x, y, score, strongest
    first. Positions are refined to sub-pixel by a parabola through the log of the peak and
    its two neighbours on each axis (exact for a Gaussian bump); one peak per flat top."""
    hm = np.ascontiguousarray(heatmap, np.float32)
    h, w = hm.shape
    dil = cv2.dilate(hm, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero((hm >= dil) & (hm > threshold))
    if len(xs) == 0:
        return np.zeros((0, 3), np.float32)
    order = np.argsort(-hm[ys, xs], kind="stable")
    ys, xs = ys[order], xs[order]
    out: list[tuple[float, float, float]] = []
    taken = np.zeros_like(hm, dtype=bool)
    for y, x in zip(ys, xs):
        if taken[y, x]:
            continue
        taken[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2] = True
        fx = x + _parabola_offset(hm[y, x - 1] if x > 0 else None, hm[y, x], hm[y, x + 1] if x + 1 < w else None)
        fy = y + _parabola_offset(hm[y - 1, x] if y > 0 else None, hm[y, x], hm[y + 1, x] if y + 1 < h else None)
        out.append((fx, fy, float(hm[y, x])))
    return np.asarray(out, np.float32).reshape(-1, 3)


def _parabola_offset(left, mid, right) -> float:
    """Sub-pixel offset of a maximum from three samples (log-parabola; 0 at a border or
    where the samples are not a proper peak)."""
    if left is None or right is None or min(left, mid, right) <= 0:
        return 0.0
    a, b, c = np.log(float(left)), np.log(float(mid)), np.log(float(right))
    den = a - 2.0 * b + c
    if den >= 0:
        return 0.0
    return float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))


def upsample_maps(maps: np.ndarray, net_size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(C, h, w) network maps -> (C, H, W) at the network input size (cubic, as OpenPose),
    plus the interpolated region (x0, y0, x1, y1), inclusive.

    The outer ``stride/2`` pixels lie beyond the first/last map cell centre, where cubic
    interpolation over a replicated border invents bumps (a fake peak on the edge row
    beside a real part near the edge). They are set to the nearest interpolated row /
    column, and peaks are searched only inside the region."""
    C, h, w = maps.shape
    W, H = int(net_size[0]), int(net_size[1])
    up = cv2.resize(np.ascontiguousarray(maps.transpose(1, 2, 0)), (W, H), interpolation=cv2.INTER_CUBIC)
    up = np.ascontiguousarray(up.reshape(H, W, C).transpose(2, 0, 1))
    fy, fx = H / h, W / w
    y0, y1 = int(np.ceil(fy / 2 - 0.5)), int(np.floor(H - fy / 2 - 0.5))  # first/last interpolated row
    x0, x1 = int(np.ceil(fx / 2 - 0.5)), int(np.floor(W - fx / 2 - 0.5))
    y0, y1 = min(max(y0, 0), H - 1), max(min(y1, H - 1), 0)
    x0, x1 = min(max(x0, 0), W - 1), max(min(x1, W - 1), 0)
    up[:, :y0, :] = up[:, y0 : y0 + 1, :]
    up[:, y1 + 1 :, :] = up[:, y1 : y1 + 1, :]
    up[:, :, :x0] = up[:, :, x0 : x0 + 1]
    up[:, :, x1 + 1 :] = up[:, :, x1 : x1 + 1]
    return up, (x0, y0, x1, y1)


def score_limb(
    paf_x: np.ndarray,
    paf_y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    inter_threshold: float = 0.05,
    inter_min_above: float = 0.95,
) -> float:
    """PAF line integral from point ``a`` to ``b`` (x, y): the mean of PAF . unit(b - a) over
    the samples above ``inter_threshold``, or -1 when too few samples agree (the pair is
    not a limb)."""
    h, w = paf_x.shape
    d = np.asarray(b[:2], np.float64) - np.asarray(a[:2], np.float64)
    norm = float(np.hypot(*d))
    if norm < 1e-6:
        return -1.0
    u = d / norm
    n = int(max(5, min(25, round(np.sqrt(5.0 * norm)))))
    t = np.linspace(0.0, 1.0, n)
    xs = np.clip(np.round(a[0] + t * d[0]).astype(np.int64), 0, w - 1)
    ys = np.clip(np.round(a[1] + t * d[1]).astype(np.int64), 0, h - 1)
    dots = paf_x[ys, xs] * u[0] + paf_y[ys, xs] * u[1]
    above = dots > inter_threshold
    if above.sum() < inter_min_above * n or not above.any():
        return -1.0
    return float(dots[above].mean())


def assemble_people(
    peaks: Sequence[np.ndarray],
    pafs: np.ndarray,
    layout: OpenPoseLayout,
    inter_threshold: float = 0.05,
    inter_min_above: float = 0.95,
    min_parts: int = 3,
    min_person_score: float = 0.4,
) -> np.ndarray:
    """Group part candidates into people. ``peaks[j]`` is (Nj, 3) for part j, ``pafs`` the
    (2L, H, W) PAF maps in the layout's channel order. Returns (P, num_parts, 3) in the
    layout's own part order, strongest person first."""
    J = layout.num_parts
    redundant = {k for k, p in enumerate(layout.pairs) if p in layout.redundant}
    # person = [part -> candidate id (-1)], plus running score and part count
    people_parts: list[np.ndarray] = []
    people_score: list[float] = []
    for k, ((pa, pb), (cx, cy)) in enumerate(zip(layout.pairs, layout.paf)):
        ca, cb = peaks[pa], peaks[pb]
        if len(ca) == 0 or len(cb) == 0:
            continue
        cands = []
        for i in range(len(ca)):
            for j in range(len(cb)):
                s = score_limb(pafs[cx], pafs[cy], ca[i], cb[j], inter_threshold, inter_min_above)
                if s > 0:
                    cands.append((s, i, j))
        cands.sort(key=lambda c: -c[0])
        used_a, used_b = set(), set()
        for s, i, j in cands:
            if i in used_a or j in used_b:
                continue
            used_a.add(i)
            used_b.add(j)
            owners = [p for p, parts in enumerate(people_parts) if parts[pa] == i or parts[pb] == j]
            if len(owners) == 1:
                p = owners[0]
                parts = people_parts[p]
                if parts[pb] == -1 and parts[pa] == i:
                    parts[pb] = j
                    people_score[p] += float(cb[j, 2]) + s
                elif parts[pa] == -1 and parts[pb] == j:
                    parts[pa] = i
                    people_score[p] += float(ca[i, 2]) + s
                else:
                    people_score[p] += s if (parts[pa] == i and parts[pb] == j) else 0.0
            elif len(owners) == 2:
                p, q = owners
                a_parts, b_parts = people_parts[p], people_parts[q]
                if not np.any((a_parts >= 0) & (b_parts >= 0)):  # disjoint halves of one person
                    a_parts[b_parts >= 0] = b_parts[b_parts >= 0]
                    people_score[p] += people_score[q] + s
                    del people_parts[q], people_score[q]
            elif k not in redundant:
                parts = np.full(J, -1, np.int64)
                parts[pa], parts[pb] = i, j
                people_parts.append(parts)
                people_score.append(float(ca[i, 2]) + float(cb[j, 2]) + s)
    out = []
    for parts, score in zip(people_parts, people_score):
        n = int((parts >= 0).sum())
        if n < min_parts or score / n < min_person_score:
            continue
        kp = np.zeros((J, 3), np.float32)
        for j in range(J):
            if parts[j] >= 0:
                kp[j] = peaks[j][parts[j]]
        out.append((score, kp))
    out.sort(key=lambda t: -t[0])
    return np.asarray([kp for _, kp in out], np.float32).reshape(-1, J, 3)


def parse_maps(
    maps: np.ndarray,
    net_size: tuple[int, int],
    scale: tuple[float, float],
    layout: OpenPoseLayout | None = None,
    nms_threshold: float = 0.05,
    inter_threshold: float = 0.05,
    inter_min_above: float = 0.95,
    min_parts: int = 3,
    min_person_score: float = 0.4,
) -> np.ndarray:
    """Network output (C, h, w) -> people (P, num_parts, 3) in frame pixels.

    ``net_size`` = (W, H) of the network input; ``scale`` = (sx, sy) from frame pixels to
    network-input pixels (the image sits at the top-left of the padded input)."""
    maps = np.asarray(maps, np.float32)
    if maps.ndim == 4:
        maps = maps[0]
    layout = layout or layout_for_channels(maps.shape[0])
    if maps.shape[0] != layout.channels:
        raise ModelWeightsError(f"OpenPose output has {maps.shape[0]} channels, {layout.name} needs {layout.channels}")
    up, (x0, y0, x1, y1) = upsample_maps(maps, net_size)  # as OpenPose does before NMS
    J = layout.num_parts
    peaks = []
    for j in range(J):
        pk = find_peaks(up[j, y0 : y1 + 1, x0 : x1 + 1], nms_threshold)
        pk[:, 0] += x0
        pk[:, 1] += y0
        peaks.append(pk)
    pafs = up[J + 1 :]
    people = assemble_people(peaks, pafs, layout, inter_threshold, inter_min_above, min_parts, min_person_score)
    if len(people):
        sx, sy = float(scale[0]), float(scale[1])
        found = people[..., 2] > 0
        # network-input pixel -> frame pixel (pixel centres: resize maps i -> (i + .5) s - .5)
        people[..., 0] = np.where(found, (people[..., 0] + 0.5) / sx - 0.5, 0.0)
        people[..., 1] = np.where(found, (people[..., 1] + 0.5) / sy - 0.5, 0.0)
    return people


# ----------------------------------------------------------------------------- backend


def _net_input(frame_rgb: np.ndarray, input_height: int, input_width: int | None) -> tuple[np.ndarray, tuple[int, int], tuple[float, float]]:
    """Resize keeping the aspect ratio into an (H, W) canvas (W a multiple of 16 unless
    given); returns the BGR canvas, (W, H) and the per-axis scale actually applied."""
    h, w = frame_rgb.shape[:2]
    H = int(input_height)
    W = int(input_width) if input_width else max(16, int(round(H * w / h / 16.0)) * 16)
    s = min(W / w, H / h)
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    img = cv2.resize(frame_rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    canvas = np.zeros((H, W, 3), np.uint8)
    canvas[:nh, :nw] = img[..., ::-1]  # RGB -> BGR (the Caffe models were trained on BGR)
    return canvas, (W, H), (nw / w, nh / h)


def _resolve(path: str | os.PathLike | None, env: str) -> str:
    return str(path) if path else os.environ.get(env, "")


class OpenPoseEstimator:
    """Multi-person body (+ feet for BODY_25) keypoints from a user-supplied OpenPose model."""

    name = "openpose"

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        proto_path: str | os.PathLike | None = None,
        input_height: int = 368,
        input_width: int | None = None,
        nms_threshold: float = 0.05,
        inter_threshold: float = 0.05,
        inter_min_above: float = 0.95,
        min_parts: int = 3,
        min_person_score: float = 0.4,
        keep_outside: bool = False,
        **kwargs: object,
    ):
        kwargs.pop("min_score", None)  # evaluate.pose.min_score is the metrics' visibility threshold
        check_extra_kwargs(kwargs, "OpenPoseEstimator")  # e.g. det_model_path: openpose finds people itself
        model = _resolve(model_path, ENV_MODEL)
        proto = _resolve(proto_path, ENV_PROTO)
        where = (
            f"set {ENV_MODEL}=/path/to/pose_iter_584000.caffemodel (and {ENV_PROTO}=/path/to/pose_deploy.prototxt) "
            "or an .onnx export (used wherever it runs: the tracker's pose fallback, track.pose_backend, and the "
            "evaluation), or evaluate.pose.model_path (the evaluation only). deid never downloads model weights."
        )
        if not model:
            raise ModelWeightsError(f"no OpenPose model given: {where}")
        if not Path(model).is_file():
            raise ModelWeightsError(f"OpenPose model file not found: {model!r}; {where}")
        is_caffe = model.lower().endswith(".caffemodel")
        if is_caffe and not proto:
            sib = sorted(Path(model).parent.glob("*.prototxt"))
            if len(sib) == 1:
                proto = str(sib[0])
            else:
                raise ModelWeightsError(f"Caffe model {model!r} needs its prototxt: set evaluate.pose.proto_path or {ENV_PROTO}")
        if proto and not Path(proto).is_file():
            raise ModelWeightsError(f"OpenPose prototxt not found: {proto!r}; {where}")
        self.model_path, self.proto_path = model, proto
        # one network per input size (see deid._dnn); the first is loaded now, so a bad
        # file fails here rather than on the first frame
        self._nets = NetsBySize(self._load, first=self._load())
        self.input_height = int(input_height)
        self.input_width = int(input_width) if input_width else None
        if self.input_height % STRIDE or (self.input_width and self.input_width % STRIDE):
            raise ModelWeightsError(f"OpenPose input size must be a multiple of {STRIDE}, got {self.input_width}x{self.input_height}")
        self.params = dict(
            nms_threshold=float(nms_threshold),
            inter_threshold=float(inter_threshold),
            inter_min_above=float(inter_min_above),
            min_parts=int(min_parts),
            min_person_score=float(min_person_score),
        )
        self.keep_outside = bool(keep_outside)
        self.layout: OpenPoseLayout | None = None  # known after the first forward pass
        self._lock = threading.Lock()

    def _load(self):
        model, proto = self.model_path, self.proto_path
        try:
            return cv2.dnn.readNet(model, proto) if proto else cv2.dnn.readNet(model)
        except cv2.error as e:
            raise ModelWeightsError(f"cv2.dnn could not load the OpenPose model {model!r} ({str(e).strip()[:200]}); "
                                    f"check {ENV_MODEL} or evaluate.pose.model_path") from None

    def forward(self, frame: np.ndarray) -> tuple[np.ndarray, tuple[int, int], tuple[float, float]]:
        """Raw network output (C, h, w) for one RGB frame, with the net size and scale."""
        canvas, net_size, scale = _net_input(frame, self.input_height, self.input_width)
        blob = cv2.dnn.blobFromImage(canvas, 1.0 / 256.0, None, (128.0, 128.0, 128.0), swapRB=False, crop=False)
        with self._lock:
            try:
                net = self._nets.get(blob.shape[2:])
                net.setInput(blob)
                out = net.forward()
            except cv2.error as e:  # e.g. an export with a fixed input of another size, or not a pose network
                msg = one_line(e)
                raise ModelWeightsError(
                    f"OpenPose model {self.model_path!r} failed on a {blob.shape[3]}x{blob.shape[2]} network input "
                    f"({msg}); check {ENV_MODEL} or evaluate.pose.model_path"
                ) from None
        out = np.asarray(out, np.float32)
        if out.ndim != 4 or out.shape[0] != 1:
            raise ModelWeightsError(f"OpenPose model {self.model_path!r} returned shape {out.shape}; expected (1, C, H/8, W/8)")
        if self.layout is None:
            self.layout = layout_for_channels(out.shape[1])
        return out[0], net_size, scale

    def estimate(self, frames: Sequence[np.ndarray]) -> list[Keypoints]:
        frames = check_frames(frames, "OpenPoseEstimator")
        results = []
        for f in frames:
            maps, net_size, scale = self.forward(f)
            people = parse_maps(maps, net_size, scale, self.layout, **self.params)
            if len(people) == 0:
                results.append(empty())
                continue
            wb = to_wholebody(people, self.layout.to_wholebody)
            results.append(finalize(wb, f.shape[1], f.shape[0], self.keep_outside))
        return results

    def reset(self) -> None:
        """Stateless (every frame is independent)."""
