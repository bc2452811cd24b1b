"""The wholebody133 keypoint table."""

from __future__ import annotations

import numpy as np
import pytest

from deid.pose import schema as S


def test_table_shape_and_names():
    assert S.NUM_KEYPOINTS == len(S.SCHEMA) == 133
    assert [k.index for k in S.SCHEMA] == list(range(133))
    names = S.names()
    assert len(set(names)) == 133
    assert names[:5] == ["nose", "left_eye", "right_eye", "left_ear", "right_ear"]
    assert S.index_of("left_wrist") == 9 and S.index_of("right_ankle") == 16
    with pytest.raises(KeyError, match="no keypoint named"):
        S.index_of("tail")
    with pytest.raises(Exception):
        S.SCHEMA[0].sigma = 1.0  # frozen rows


def test_regions_partition_the_table():
    seen = np.zeros(133, int)
    for ix in S.REGIONS.values():
        seen[list(ix)] += 1
    assert np.all(seen == 1)
    spans = {r: (min(ix), max(ix)) for r, ix in S.REGIONS.items()}
    assert spans == {
        "head": (0, 4), "body": (5, 16), "feet": (17, 22), "face": (23, 90),
        "left_hand": (91, 111), "right_hand": (112, 132),
    }
    assert all(S.SCHEMA[i].region == r for r, ix in S.REGIONS.items() for i in ix)


def test_groups_and_lookup():
    assert S.indices("overall") == tuple(range(133))
    assert S.indices("body") == tuple(range(17))  # the group (COCO-17) wins over the region
    assert S.region_indices("body") == tuple(range(5, 17))
    assert S.indices("head") == tuple(range(5))
    assert S.indices("face") == tuple(range(23, 91))
    assert S.indices("hands") == tuple(range(91, 133))
    assert S.indices("left_hand") == tuple(range(91, 112))  # a region without a group of that name
    for bad in (S.indices, S.region_indices, S.group_indices):
        with pytest.raises(KeyError):
            bad("tail")


def test_sigmas_match_published_values():
    s = S.sigmas()
    assert s.dtype == np.float64 and s.shape == (133,)
    # COCO body (pycocotools: .26 .25 .25 .35 .35 .79 .79 .72 .72 .62 .62 1.07 1.07 .87 .87 .89 .89 / 10)
    np.testing.assert_allclose(s[:17], np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62,
                                                 1.07, 1.07, .87, .87, .89, .89]) / 10)
    # COCO-WholeBody (myeval_wholebody.py): first foot, first/last face, the nose-bottom face point, hands
    assert s[17] == pytest.approx(0.068) and s[22] == pytest.approx(0.094)
    assert s[23] == pytest.approx(0.042) and s[90] == pytest.approx(0.008)
    assert s[23 + 47] == pytest.approx(0.034)
    assert s[91] == pytest.approx(0.029) and s[111] == pytest.approx(0.031)
    np.testing.assert_array_equal(s[91:112], s[112:133])
    np.testing.assert_array_equal(S.sigmas("hands"), s[91:133])
    np.testing.assert_array_equal(S.sigmas([0, 9]), s[[0, 9]])
    assert np.all((s > 0) & (s < 0.11))


def test_flip_pairs_swap_left_and_right():
    p = S.flip_index()
    np.testing.assert_array_equal(p[p], np.arange(133))  # an involution
    for a, b in S.FLIP_PAIRS:
        na, nb = S.SCHEMA[a].name, S.SCHEMA[b].name
        if S.SCHEMA[a].region != "face":  # (face names count along the contour, so mirrors differ)
            assert na.replace("left", "X").replace("right", "left").replace("X", "right") == nb
        if S.SCHEMA[a].region in ("head", "body", "left_hand"):
            # (the published foot and face sigmas are not left/right symmetric)
            assert S.SCHEMA[a].sigma == pytest.approx(S.SCHEMA[b].sigma)
    assert p[23] == 23 + 16 and p[23 + 8] == 23 + 8  # jaw ends swap, chin stays
    assert p[0] == 0  # nose stays


def test_skeleton_edges_are_valid():
    edges = S.skeleton()
    assert edges and all(0 <= a < 133 and 0 <= b < 133 and a != b for a, b in edges)
    assert len(set(edges)) == len(edges)
    assert len(S.SKELETON["body"]) == 19  # COCO's person skeleton
    assert (9, 91) in S.SKELETON["left_hand"] and (10, 112) in S.SKELETON["right_hand"]
    with pytest.raises(KeyError):
        S.skeleton(["tail"])
    # every face / hand point is drawn
    drawn = {i for e in edges for i in e}
    assert set(range(23, 133)) <= drawn


def test_dataframe():
    df = S.to_dataframe()
    assert len(df) == 133
    assert list(df.columns) == ["index", "name", "region", "sigma", "flip", "groups"]
    assert df.loc[0, "groups"] == "overall,body,head"
    assert df.region.value_counts().to_dict() == {"face": 68, "left_hand": 21, "right_hand": 21, "body": 12, "feet": 6, "head": 5}
