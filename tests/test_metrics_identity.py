"""Identity leak metrics and the re-identification attack (deid.metrics.identity / .reid)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from deid.errors import InvalidInputError
from deid.metrics.identity import box_iou, identity_rows, summarize_identity
from deid.metrics.reid import average_precision, expected_random_ap, reid_attack

D = 8


def unit(i, d=D):
    v = np.zeros(d, np.float32)
    v[i] = 1.0
    return v


PATIENT, DONOR, OTHER = unit(0), unit(1), unit(2)
BOX_A = np.array([10, 10, 60, 70], np.float32)
BOX_B = np.array([200, 20, 250, 80], np.float32)


def test_box_iou():
    iou = box_iou(np.array([[0, 0, 10, 10], [np.nan, 0, 1, 1]]), np.array([[5, 0, 15, 10], [0, 0, 10, 10]]))
    np.testing.assert_allclose(iou, [[50 / 150, 1.0], [0.0, 0.0]])
    assert box_iou(np.zeros((0, 4)), BOX_A[None]).shape == (0, 1)


def test_identity_rows_cover_each_case():
    # frame 0: processed face where the patient was, unchanged -> leak (same place and refs)
    # frame 1: face swapped to the donor -> no leak, matches target
    # frame 2: no face found in the processed frame although the original had one
    # frame 3: a face the encoder could not embed (NaN) + a bystander that moved away
    orig_boxes = [BOX_A[None], BOX_A[None], BOX_A[None], np.stack([BOX_A, BOX_B])]
    orig_emb = [PATIENT[None], PATIENT[None], PATIENT[None], np.stack([PATIENT, OTHER])]
    proc_boxes = [BOX_A[None] + 2, BOX_A[None], np.zeros((0, 4)), np.stack([BOX_A, BOX_B + 100])]
    proc_emb = [PATIENT[None] * 1.01, DONOR[None], np.zeros((0, D)), np.stack([np.full(D, np.nan), OTHER])]
    rows = identity_rows(
        proc_boxes, proc_emb, orig_boxes, orig_emb,
        patient_refs=np.stack([PATIENT, PATIENT + 0.05]), target_refs=DONOR[None],
        threshold=0.6, video="v", method="swap", frames=[0, 5, 10, 15],
    )
    assert [(r["frame"], r["face"]) for r in rows] == [(0, 0), (5, 0), (10, -1), (15, 0), (15, 1)]
    r0, r1, r2, r3, r4 = rows
    assert r0["leak"] and r0["match_original"] and r0["match_patient"]
    assert r0["dist_original"] == pytest.approx(0.01, abs=1e-6)
    assert r0["dist_patient"] == pytest.approx(0.01, abs=1e-6)  # min over the references
    assert not r1["leak"] and r1["match_target"] and r1["dist_target"] == pytest.approx(0.0, abs=1e-6)
    assert r1["dist_patient"] == pytest.approx(np.sqrt(2), rel=1e-5)
    assert not r2["found"] and r2["orig_faces"] == 1 and np.isnan(r2["x1"])
    assert r3["found"] and not r3["embedded"] and np.isnan(r3["dist_patient"]) and not r3["leak"]
    # moved bystander: no original face at that place (IoU 0) -> no same-place distance
    assert r4["iou_original"] == 0.0 and np.isnan(r4["dist_original"]) and not r4["leak"]

    s = summarize_identity(rows)
    assert s["frames"] == 4 and s["frames_no_face"] == 1 and s["frames_no_face_orig_had"] == 1
    assert s["faces"] == 4 and s["faces_embedded"] == 3
    assert s["frames_leak"] == 1 and s["faces_leak"] == 1
    assert s["frames_match_patient"] == 1 and s["frames_match_target"] == 1
    assert s["min_dist_patient"] == pytest.approx(0.01, abs=1e-6)


def test_identity_rows_without_original_or_refs_and_cosine():
    rows = identity_rows([BOX_A[None]], [PATIENT[None] * 5], patient_refs=PATIENT[None], distance="cosine", threshold=0.3)
    assert rows[0]["dist_patient"] == pytest.approx(0.0, abs=1e-6) and rows[0]["match_patient"]
    assert np.isnan(rows[0]["dist_original"]) and np.isnan(rows[0]["dist_target"])
    assert rows[0]["orig_faces"] == 0
    # a callable distance (e.g. encoder.distance) is used as given
    rows = identity_rows([BOX_A[None]], [PATIENT[None]], patient_refs=PATIENT[None], distance=lambda a, b: np.full((len(a), len(b)), 0.7))
    assert rows[0]["dist_patient"] == pytest.approx(0.7) and not rows[0]["match_patient"]


def test_identity_rows_input_errors():
    with pytest.raises(InvalidInputError, match="one row per box"):
        identity_rows([BOX_A[None]], [np.zeros((2, D))])
    with pytest.raises(InvalidInputError, match="embeddings"):
        identity_rows([BOX_A[None]], [])
    with pytest.raises(InvalidInputError, match="unknown distance"):
        identity_rows([BOX_A[None]], [PATIENT[None]], distance="manhattan")


def test_summarize_empty():
    s = summarize_identity([])
    assert s["frames"] == 0 and np.isnan(s["mean_dist_patient"])


# ----------------------------------------------------------------------------- attack


def test_average_precision_by_hand():
    assert average_precision([True, False, True]) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision([False, False, True]) == pytest.approx(1 / 3)
    assert np.isnan(average_precision([False, False]))


@pytest.mark.parametrize("n,r", [(1, 1), (4, 1), (4, 2), (5, 3), (6, 6)])
def test_expected_random_ap_is_exact(n, r):
    """Closed form == the mean AP over every distinct ranking."""
    aps = []
    for pos in itertools.combinations(range(n), r):
        rel = np.zeros(n, bool)
        rel[list(pos)] = True
        aps.append(average_precision(rel))
    assert expected_random_ap(r, n) == pytest.approx(np.mean(aps), rel=1e-12)


def clustered_gallery(rng, ids=10, per_id=5, dim=128, spread=0.05):
    centres = rng.normal(size=(ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    g = np.repeat(centres, per_id, axis=0) + rng.normal(0, spread, (ids * per_id, dim))
    labels = np.repeat([f"id{i}" for i in range(ids)], per_id)
    return centres, g.astype(np.float32), labels


def test_attack_on_unprocessed_faces_is_perfect():
    rng = np.random.default_rng(0)
    centres, g, labels = clustered_gallery(rng)
    probes = centres[0] + rng.normal(0, 0.05, (50, 128))  # the patient's own faces
    res = reid_attack(g, labels, probes, "id0")
    assert res.rank1 == 1.0 and res.mean_ap == pytest.approx(1.0)
    assert res.chance_rank1 == pytest.approx(1 / 10)  # ten identities, one template each
    assert res.chance_map == pytest.approx(expected_random_ap(1, 10))
    assert res.probes == res.probes_used == 50 and res.identities == 10 and res.coverage == 1.0


def test_attack_on_random_embeddings_is_at_chance():
    """Faces carrying no identity: fresh random gallery and probe per trial (so no
    single gallery's geometry, e.g. a hub point, decides the outcome)."""
    rng = np.random.default_rng(1)
    labels = np.repeat([f"id{i}" for i in range(4)], 5)
    r1, ap = [], []
    for _ in range(1000):
        res = reid_attack(rng.normal(size=(20, 128)), labels, rng.normal(size=(1, 128)), "id0")
        r1.append(res.rank1)
        ap.append(res.mean_ap)
    assert res.chance_rank1 == pytest.approx(1 / 4)
    # binomial s.d. of the mean rank-1 over 1000 trials at p = 0.25 is 0.014
    assert np.mean(r1) == pytest.approx(res.chance_rank1, abs=0.05)
    assert np.mean(ap) == pytest.approx(res.chance_map, abs=0.04)


@pytest.mark.parametrize("patient_items,others,per_other", [(1, 3, 8), (8, 3, 1)])
def test_attack_chance_holds_when_identities_have_unequal_counts(patient_items, others, per_other):
    """Faces of unrelated people against a gallery of identities with 1 vs 8 embeddings
    (one reference photo against distractor videos, or the reverse) come out as the
    patient 1 / K of the time, as reported: neither more items nor fewer favour an
    identity (item-level ranking gave 0.13 and 0.44 where 0.25 was reported)."""
    rng = np.random.default_rng(11)
    dim = 128

    def centre():
        return rng.normal(0, 0.85 / np.sqrt(2 * dim), dim)

    def faces(c, n):
        return c + rng.normal(0, 0.35 / np.sqrt(2 * dim), (n, dim))

    r1 = []
    for _ in range(600):
        gal = np.concatenate([faces(centre(), patient_items)] + [faces(centre(), per_other) for _ in range(others)])
        labels = ["patient"] * patient_items + [f"d{k}" for k in range(others) for _ in range(per_other)]
        res = reid_attack(gal, labels, faces(centre(), 5), "patient")
        r1.append(res.rank1)
    assert res.chance_rank1 == pytest.approx(1 / (others + 1)) and res.identities == others + 1
    # s.d. of the mean over 600 trials of 5 correlated probes <= sqrt(.25 * .75 / 600) = 0.018
    assert np.mean(r1) == pytest.approx(1 / (others + 1), abs=0.06)


def test_attack_nan_probes_and_errors():
    rng = np.random.default_rng(2)
    centres, g, labels = clustered_gallery(rng, ids=3, per_id=2, dim=16)
    probes = np.stack([centres[1], np.full(16, np.nan)])
    res = reid_attack(g, labels, probes, ["id1", "id1"])
    assert res.probes == 2 and res.probes_used == 1 and res.rank1 == 1.0 and res.coverage == 0.5
    none = reid_attack(g, labels, np.full((3, 16), np.nan), "id1")
    assert np.isnan(none.rank1) and none.chance_rank1 == pytest.approx(1 / 3)
    assert set(none.to_dict()) >= {"attack_rank1", "attack_map", "attack_chance_rank1"}
    with pytest.raises(InvalidInputError, match="not in the gallery"):
        reid_attack(g, labels, centres[:1], "nobody")
    with pytest.raises(InvalidInputError, match="labels"):
        reid_attack(g, labels[:-1], centres[:1], "id0")
    with pytest.raises(InvalidInputError, match="probes must have shape"):
        reid_attack(g, labels, np.zeros((1, 3)), "id0")
