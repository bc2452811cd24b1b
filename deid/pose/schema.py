"""The project's keypoint schema, as data: "wholebody133".

One table (:data:`SCHEMA`) says, for every keypoint a pose backend can report, its index,
name, body region and COCO OKS sigma. Every backend maps its own output onto this layout
(points it does not give have score 0), and every metric reads its sigmas and region
subsets from here, so there is exactly one place that says what "the face AP" means.

Layout (COCO-WholeBody, Jin et al., "Whole-Body Human Pose Estimation in the Wild",
ECCV 2020; https://github.com/jin-s13/COCO-WholeBody):

=========  =========  ===================================================
indices    region     what
=========  =========  ===================================================
0..4       head       COCO nose, eyes, ears
5..16      body       COCO shoulders, elbows, wrists, hips, knees, ankles
17..22     feet       big toe, small toe, heel (left then right)
23..90     face       the 68 iBUG / 300-W face landmarks (dlib's order)
91..111    left_hand  wrist + 4 joints per finger, thumb to pinky
112..132   right_hand same order
=========  =========  ===================================================

"left"/"right" are the *person's* sides (COCO convention): a person facing the camera has
their left shoulder on the image right.

Region *groups* are what reports aggregate over (:data:`GROUPS`). Note the one name that
means two things: the group ``"body"`` is COCO-17 (regions head + body, indices 0..16),
because that is what "body AP" means in COCO and COCO-WholeBody evaluation, while the
region ``"body"`` is only 5..16. :func:`indices` resolves group names first; use
:func:`region_indices` for the bare region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "SCHEMA_NAME",
    "NUM_KEYPOINTS",
    "KeypointInfo",
    "SCHEMA",
    "REGIONS",
    "GROUPS",
    "SKELETON",
    "FLIP_PAIRS",
    "indices",
    "region_indices",
    "group_indices",
    "sigmas",
    "names",
    "index_of",
    "flip_index",
    "skeleton",
    "to_dataframe",
]

SCHEMA_NAME = "wholebody133"
NUM_KEYPOINTS = 133

# ----------------------------------------------------------------------------- sigmas
# Per-keypoint OKS sigmas. Body: COCO's (pycocotools COCOeval.Params.kpt_oks_sigmas,
# .26 .25 .25 .35 .35 .79 .79 .72 .72 .62 .62 1.07 1.07 .87 .87 .89 .89 / 10).
# Feet, face, hands: COCO-WholeBody's published evaluation constants
# (jin-s13/COCO-WholeBody, evaluation/myeval_wholebody.py; also in xtcocotools and
# mmpose's coco_wholebody dataset config). The two hands share one list.
_SIGMAS_BODY = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62,
                         1.07, 1.07, 0.87, 0.87, 0.89, 0.89]) / 10.0
_SIGMAS_FEET = [0.068, 0.066, 0.066, 0.092, 0.094, 0.094]
_SIGMAS_FACE = [
    0.042, 0.043, 0.044, 0.043, 0.040, 0.035, 0.031, 0.025, 0.020, 0.023, 0.029, 0.032, 0.037, 0.038,
    0.043, 0.041, 0.045, 0.013, 0.012, 0.011, 0.011, 0.012, 0.012, 0.011, 0.011, 0.013, 0.015, 0.009,
    0.007, 0.007, 0.007, 0.012, 0.009, 0.008, 0.016, 0.010, 0.017, 0.011, 0.009, 0.011, 0.009, 0.007,
    0.013, 0.008, 0.011, 0.012, 0.010, 0.034, 0.008, 0.008, 0.009, 0.008, 0.008, 0.007, 0.010, 0.008,
    0.009, 0.009, 0.009, 0.007, 0.007, 0.008, 0.011, 0.008, 0.008, 0.008, 0.010, 0.008,
]
_SIGMAS_HAND = [0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024,
                0.022, 0.026, 0.017, 0.021, 0.021, 0.032, 0.020, 0.019, 0.022, 0.031]

# ----------------------------------------------------------------------------- names
_BODY_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
]
_FEET_NAMES = ["left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel"]
# iBUG-68 point groups, for readable names (face_jaw_0 .. face_mouth_inner_7).
_FACE_PARTS = [("jaw", 17), ("right_brow", 5), ("left_brow", 5), ("nose_bridge", 4), ("nose_base", 5),
               ("right_eye", 6), ("left_eye", 6), ("mouth_outer", 12), ("mouth_inner", 8)]
_FINGERS = ["thumb", "index", "middle", "ring", "pinky"]


def _face_names() -> list[str]:
    out = []
    for part, n in _FACE_PARTS:
        out += [f"face_{part}_{i}" for i in range(n)]
    return out


def _hand_names(side: str) -> list[str]:
    # COCO-WholeBody hand order = OpenPose hand order = MediaPipe hand order:
    # wrist, then per finger (thumb..pinky) 4 joints from the palm out to the tip.
    return [f"{side}_hand_wrist"] + [f"{side}_{f}_{j}" for f in _FINGERS for j in range(1, 5)]


# ----------------------------------------------------------------------------- table


@dataclass(frozen=True)
class KeypointInfo:
    """One row of the schema."""

    index: int
    name: str
    region: str  # head | body | feet | face | left_hand | right_hand
    sigma: float  # COCO OKS sigma (the "k/2" of the OKS formula)


_REGION_SPANS: tuple[tuple[str, int, int], ...] = (
    ("head", 0, 5),
    ("body", 5, 17),
    ("feet", 17, 23),
    ("face", 23, 91),
    ("left_hand", 91, 112),
    ("right_hand", 112, 133),
)


def _build() -> tuple[KeypointInfo, ...]:
    all_names = _BODY_NAMES + _FEET_NAMES + _face_names() + _hand_names("left") + _hand_names("right")
    all_sigmas = list(_SIGMAS_BODY) + _SIGMAS_FEET + _SIGMAS_FACE + _SIGMAS_HAND + _SIGMAS_HAND
    assert len(all_names) == len(all_sigmas) == NUM_KEYPOINTS
    region_of = {}
    for region, a, b in _REGION_SPANS:
        for i in range(a, b):
            region_of[i] = region
    return tuple(KeypointInfo(i, all_names[i], region_of[i], float(all_sigmas[i])) for i in range(NUM_KEYPOINTS))


SCHEMA: tuple[KeypointInfo, ...] = _build()

REGIONS: dict[str, tuple[int, ...]] = {r: tuple(range(a, b)) for r, a, b in _REGION_SPANS}

GROUPS: dict[str, tuple[int, ...]] = {
    "overall": tuple(range(NUM_KEYPOINTS)),
    "body": REGIONS["head"] + REGIONS["body"],  # COCO-17
    "head": REGIONS["head"],
    "face": REGIONS["face"],
    "hands": REGIONS["left_hand"] + REGIONS["right_hand"],
    "feet": REGIONS["feet"],
}

_NAME_TO_INDEX = {k.name: k.index for k in SCHEMA}

# ----------------------------------------------------------------------------- skeleton
_F0, _LH0, _RH0 = 23, 91, 112


def _chain(start: int, n: int, closed: bool = False) -> list[tuple[int, int]]:
    e = [(start + i, start + i + 1) for i in range(n - 1)]
    if closed:
        e.append((start + n - 1, start))
    return e


def _hand_edges(base: int) -> list[tuple[int, int]]:
    e = []
    for f in range(5):
        first = base + 1 + 4 * f
        e.append((base, first))
        e += _chain(first, 4)
    return e


# Edges by part, for drawing. Body: COCO's 19-edge person skeleton (0-based).
SKELETON: dict[str, tuple[tuple[int, int], ...]] = {
    "body": (
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
        (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    # ankle -> big toe, small toe, heel on each side
    "feet": ((15, 17), (15, 18), (15, 19), (16, 20), (16, 21), (16, 22)),
    # iBUG-68 contours: jaw, brows, nose bridge + base, closed eyes and lips
    "face": tuple(
        _chain(_F0 + 0, 17) + _chain(_F0 + 17, 5) + _chain(_F0 + 22, 5) + _chain(_F0 + 27, 4)
        + _chain(_F0 + 31, 5) + [(_F0 + 30, _F0 + 33)] + _chain(_F0 + 36, 6, True) + _chain(_F0 + 42, 6, True)
        + _chain(_F0 + 48, 12, True) + _chain(_F0 + 60, 8, True)
    ),
    "left_hand": tuple([(9, _LH0)] + _hand_edges(_LH0)),  # body wrist -> hand wrist, then fingers
    "right_hand": tuple([(10, _RH0)] + _hand_edges(_RH0)),
}


# ----------------------------------------------------------------------------- flip pairs
def _flip_pairs() -> tuple[tuple[int, int], ...]:
    pairs = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]
    pairs += [(17, 20), (18, 21), (19, 22)]
    # iBUG-68 mirror pairs (0-based within the face block)
    face = [(i, 16 - i) for i in range(8)]  # jaw
    face += [(17 + i, 26 - i) for i in range(5)]  # brows
    face += [(31, 35), (32, 34)]  # nostrils
    face += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    face += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    face += [(60, 64), (61, 63), (65, 67)]  # inner lips
    pairs += [(_F0 + a, _F0 + b) for a, b in face]
    pairs += [(_LH0 + i, _RH0 + i) for i in range(21)]
    return tuple(pairs)


#: (a, b) keypoints that swap under a horizontal image flip.
FLIP_PAIRS: tuple[tuple[int, int], ...] = _flip_pairs()


# ----------------------------------------------------------------------------- helpers


def region_indices(region: str) -> tuple[int, ...]:
    """Indices of one region (``head``, ``body``, ``feet``, ``face``, ``left_hand``, ``right_hand``)."""
    try:
        return REGIONS[region]
    except KeyError:
        raise KeyError(f"unknown region {region!r}; regions are {sorted(REGIONS)}") from None


def group_indices(group: str) -> tuple[int, ...]:
    """Indices of one report group (``overall``, ``body`` = COCO-17, ``head``, ``face``, ``hands``, ``feet``)."""
    try:
        return GROUPS[group]
    except KeyError:
        raise KeyError(f"unknown group {group!r}; groups are {sorted(GROUPS)}") from None


def indices(region_or_group: str) -> tuple[int, ...]:
    """Indices for a group name, else a region name (groups win: ``"body"`` is COCO-17)."""
    if region_or_group in GROUPS:
        return GROUPS[region_or_group]
    if region_or_group in REGIONS:
        return REGIONS[region_or_group]
    raise KeyError(
        f"unknown region or group {region_or_group!r}; groups are {sorted(GROUPS)}, regions are {sorted(REGIONS)}"
    )


_SIGMA_ARRAY = np.array([k.sigma for k in SCHEMA], dtype=np.float64)
_SIGMA_ARRAY.setflags(write=False)


def sigmas(idx: Iterable[int] | str | None = None) -> np.ndarray:
    """OKS sigmas (float64, as pycocotools wants) for some indices, a region/group name, or all."""
    if idx is None:
        return _SIGMA_ARRAY.copy()
    if isinstance(idx, str):
        idx = indices(idx)
    return _SIGMA_ARRAY[np.asarray(list(idx), dtype=np.int64)].copy()


def names(idx: Iterable[int] | None = None) -> list[str]:
    if idx is None:
        return [k.name for k in SCHEMA]
    return [SCHEMA[i].name for i in idx]


def index_of(name: str) -> int:
    try:
        return _NAME_TO_INDEX[name]
    except KeyError:
        raise KeyError(f"no keypoint named {name!r} in {SCHEMA_NAME}") from None


def flip_index() -> np.ndarray:
    """Permutation ``p`` such that ``kps[:, p]`` is the keypoint set of the mirrored image."""
    p = np.arange(NUM_KEYPOINTS)
    for a, b in FLIP_PAIRS:
        p[a], p[b] = b, a
    return p


def skeleton(parts: Sequence[str] | None = None) -> list[tuple[int, int]]:
    """Edges of the given parts (default all) as (i, j) index pairs."""
    parts = list(SKELETON) if parts is None else list(parts)
    out: list[tuple[int, int]] = []
    for p in parts:
        if p not in SKELETON:
            raise KeyError(f"unknown skeleton part {p!r}; parts are {list(SKELETON)}")
        out += list(SKELETON[p])
    return out


def to_dataframe():
    """The schema as a pandas DataFrame (index, name, region, sigma, flip, groups)."""
    import pandas as pd

    flip = flip_index()
    rows = []
    for k in SCHEMA:
        rows.append(
            {
                "index": k.index,
                "name": k.name,
                "region": k.region,
                "sigma": k.sigma,
                "flip": int(flip[k.index]),
                "groups": ",".join(g for g, ix in GROUPS.items() if k.index in ix),
            }
        )
    return pd.DataFrame(rows)
