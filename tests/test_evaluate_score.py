"""The pure parts of ``deid evaluate``: scoring one (video, method) from arrays, the
same-place rule, the patient from the original video, stitching frame ranges, method
names. No video, no model: milliseconds each."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deid.errors import InvalidInputError
from deid.evaluate.api import method_from_name, parse_processed
from deid.evaluate.extract import VideoFaces, VideoKeypoints, blank_faces, checked_frames, merge_boxes
from deid.evaluate.references import PATIENT, References, evenly, patient_from_original, split_label
from deid.evaluate.score import same_place, score_method
from deid.evaluate.store import jsonable
from deid.identity.base import euclidean_distance
from deid.metrics.schemas import to_table
from deid.pose import schema

K = schema.NUM_KEYPOINTS
D = 4


def poses(n=12, seed=0, groups=("body", "face", "hands")):
    """One person a frame, moving, with points visible in ``groups``."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 300, (K, 2))
    out = []
    for t in range(n):
        p = np.zeros((1, K, 3), np.float32)
        p[0, :, :2] = base + 3.0 * t
        for g in groups:
            p[0, list(schema.indices(g)), 2] = 0.9
        out.append(p)
    return VideoKeypoints(0, tuple(out), "fake")


def faces(n=12, every=1, emb=None, null=None, found=True):
    """One face a frame at the same box; embeddings ``emb`` (D,) everywhere."""
    fr = np.array(checked_frames(0, n, every))
    box = np.array([[10, 10, 60, 70]], np.float32)
    e = np.asarray(emb if emb is not None else [1, 0, 0, 0], np.float32)[None]
    nb = [box if found else np.zeros((0, 4), np.float32) for _ in fr]
    ne = [e if found else np.zeros((0, D), np.float32) for _ in fr]
    nul = None if null is None else tuple(np.asarray(null, np.float32)[None] for _ in fr)
    return VideoFaces(fr, tuple(nb), tuple(ne), tuple(box for _ in fr), tuple(e for _ in fr), nul, D)


def refs_with_gallery(patient=(1, 0, 0, 0)):
    pat = np.asarray([patient], np.float32)
    others = np.asarray([[0, 5, 0, 0], [0, 0, 5, 0]], np.float32)
    return References(pat, "original_video", None, "", np.concatenate([pat, others]), (PATIENT, "a", "b"), ("a", "b"))


def test_original_against_itself_is_perfect_everywhere():
    kp = poses()
    f = faces(null=[0, 1, 0, 0])  # blank is far: verifiable face
    s = score_method("v", "original", kp, kp, f, f.as_processed(), refs_with_gallery(), fps=25.0,
                     distance=euclidean_distance, threshold=0.6)
    r = s.summary
    for g in ("overall", "body", "head", "face", "hands"):
        assert r[f"ap_{g}"] == pytest.approx(1.0), g
    assert math.isnan(r["ap_feet"])  # no ground truth there
    assert r["frames_match_same_place"] == 12 and r["frames_match_patient"] == 12
    assert r["attack_rank1"] == 1.0 and r["attack_chance_rank1"] == pytest.approx(1 / 3)
    assert r["identity_frames"] == 12 and r["patient_source"] == "original_video"
    np.testing.assert_allclose(s.perframe["oks_overall"], 1.0)
    # every table validates against its schema
    for kind, rows in (("summary", [r]), ("perframe", s.perframe), ("per_keypoint", s.per_keypoint),
                       ("clinical", s.clinical), ("identity", s.identity)):
        assert to_table(rows, kind).num_rows > 0, kind
    assert s.keypoints.num_rows == 12 * K


def test_lost_face_keypoints_lower_face_ap_and_show_per_keypoint():
    kp = poses()
    lost = VideoKeypoints(0, tuple(np.where(np.isin(np.arange(K), schema.indices("face"))[None, :, None], 0, p)
                                   for p in kp.keypoints), "fake")
    s = score_method("v", "mask", kp, lost, None, None, References(), fps=25.0)
    r = s.summary
    assert r["ap_face"] == 0.0 and r["ap_body"] == pytest.approx(1.0) and r["ap_hands"] == pytest.approx(1.0)
    miss = {row["keypoint"]: row["missing_rate"] for row in s.per_keypoint}
    assert miss[schema.indices("face")[0]] == 1.0 and miss[5] == 0.0
    assert {row["region"] for row in s.per_keypoint} >= {"face", "body", "left_hand"}
    # no faces given: identity columns stay null rather than zero
    assert r.get("frames_match_patient") is None and s.perframe["match_patient"][0] is None


def test_same_place_needs_the_output_closer_than_a_blank():
    thr, margin = 0.6, 0.1
    orig = faces(emb=[1, 0, 0, 0], null=[1.5, 0, 0, 0])  # blank 0.5 away: an unverifiable, weak face
    near = faces(emb=[1.3, 0, 0, 0])  # 0.3 < 0.5 - 0.1: carries face information
    noise = faces(emb=[1.45, 0, 0, 0])  # 0.45 < threshold, but no closer than the blank
    for proc, expect in ((near, True), (noise, False)):
        dmin, match, compared, n, _, small = same_place(orig, proc, euclidean_distance, thr, margin)
        assert compared.all() and n == len(orig)
        assert match.all() == expect and not (match.any() and not expect)
        np.testing.assert_allclose(dmin, abs(proc.ref_emb[0][0, 0] - 1.0), rtol=1e-5)
    strong = faces(emb=[1, 0, 0, 0], null=[2.0, 0, 0, 0])  # blank far away: threshold alone decides
    assert same_place(strong, faces(emb=[1.55, 0, 0, 0]), euclidean_distance, thr, margin)[1].all()
    assert not same_place(strong, faces(emb=[1.65, 0, 0, 0]), euclidean_distance, thr, margin)[1].any()


def test_same_place_leaves_out_faces_under_the_audit_size():
    """As the leak audit: a face under audit.min_face_px (longer side) is not compared.
    The test box is 50x60 px."""
    strong = faces(emb=[1, 0, 0, 0], null=[2.0, 0, 0, 0])
    same = faces(emb=[1.1, 0, 0, 0])
    dmin, match, compared, n, _, small = same_place(strong, same, euclidean_distance, 0.6, 0.1, min_face_px=60)
    assert match.all() and n == len(strong) and small == 0  # 60 px: compared
    dmin, match, compared, n, _, small = same_place(strong, same, euclidean_distance, 0.6, 0.1, min_face_px=61)
    assert not match.any() and not compared.any() and n == 0 and small == len(strong)
    assert np.isnan(dmin).all()


def test_identity_rows_and_attack_on_a_processed_video():
    kp = poses()
    orig = faces(null=[0, 1, 0, 0])
    # half of the frames still show the patient's face, the rest show a stranger
    proc_e = [np.asarray([[1, 0, 0, 0]] if j % 2 == 0 else [[0, 5, 0.1, 0]], np.float32) for j in range(12)]
    proc = VideoFaces(orig.frames, orig.found_boxes, tuple(proc_e), orig.ref_boxes, tuple(proc_e), None, D)
    r = score_method("v", "blur", kp, kp, orig, proc, refs_with_gallery(), fps=25.0,
                     distance=euclidean_distance, threshold=0.6).summary
    assert r["frames_match_patient"] == 6 and r["frames_match_same_place"] == 6
    assert r["attack_rank1"] == pytest.approx(0.5) and r["attack_probes"] == 12 and r["attack_identities"] == 3


def test_no_probe_still_reports_chance_and_no_face_frames():
    kp = poses()
    orig = faces(null=[0, 1, 0, 0])
    gone = faces(found=False)
    gone = VideoFaces(gone.frames, gone.found_boxes, gone.found_emb, orig.ref_boxes,
                      tuple(np.full((1, D), np.nan, np.float32) for _ in orig.frames), None, D)
    s = score_method("v", "mask", kp, kp, orig, gone, refs_with_gallery(), fps=25.0, distance=euclidean_distance)
    r = s.summary
    assert r["frames_no_face"] == 12 and r["frames_match_patient"] == 0 and r["same_place_faces"] == 0
    assert math.isnan(r["attack_rank1"]) and r["attack_chance_rank1"] == pytest.approx(1 / 3)
    assert all(v == 0 for v in s.perframe["faces_found"])


def test_faces_checked_on_other_frames_are_refused():
    kp = poses()
    with pytest.raises(InvalidInputError, match="different frames"):
        score_method("v", "m", kp, kp, faces(every=2), faces(every=3), References(), fps=25.0)
    with pytest.raises(InvalidInputError, match="same frames"):
        score_method("v", "m", kp, VideoKeypoints(0, kp.keypoints[:5]), None, None, References(), fps=25.0)


def test_ranges_use_global_frame_numbers_and_stitch():
    assert checked_frames(0, 10, 3) == [0, 3, 6, 9]
    assert checked_frames(4, 10, 3) == [6, 9]  # same frames as the whole video would check
    whole = faces(12, every=2)
    parts = [VideoFaces(whole.frames[a:b], whole.found_boxes[a:b], whole.found_emb[a:b], whole.ref_boxes[a:b],
                        whole.ref_emb[a:b], None, D) for a, b in ((3, 6), (0, 3))]
    back = VideoFaces.concat(parts)
    np.testing.assert_array_equal(back.frames, whole.frames)
    with pytest.raises(InvalidInputError, match="overlap"):
        VideoFaces.concat([parts[0], parts[0]])
    kp = poses(10)
    stitched = VideoKeypoints.concat([VideoKeypoints(5, kp.keypoints[5:]), VideoKeypoints(0, kp.keypoints[:5])])
    assert len(stitched) == 10 and stitched.start == 0
    with pytest.raises(InvalidInputError, match="does not follow"):
        VideoKeypoints.concat([VideoKeypoints(0, kp.keypoints[:4]), VideoKeypoints(5, kp.keypoints[5:])])


def test_patient_from_original_keeps_the_largest_verifiable_face():
    big, small = [0, 0, 100, 100], [0, 0, 20, 20]
    boxes = (np.array([small, big], np.float32), np.array([big], np.float32), np.zeros((0, 4), np.float32))
    embs = (np.array([[9, 9, 9, 9], [1, 0, 0, 0]], np.float32), np.array([[2, 0, 0, 0]], np.float32),
            np.zeros((0, D), np.float32))
    nulls = (np.array([[0, 0, 0, 0], [1, 1, 0, 0]], np.float32),  # big face: blank 1.0 away (verifiable)
             np.array([[2.3, 0, 0, 0]], np.float32),  # blank 0.3 away: cannot tell it from nothing
             np.zeros((0, D), np.float32))
    f = VideoFaces(np.arange(3), boxes, embs, boxes, embs, nulls, D)
    emb, seen, kept = patient_from_original(f, euclidean_distance, 0.6)
    assert (seen, kept) == (2, 1)
    np.testing.assert_array_equal(emb, [[1, 0, 0, 0]])


def test_small_helpers():
    np.testing.assert_array_equal(evenly(np.arange(10)[:, None], 3)[:, 0], [0, 4, 9])  # rounded linspace
    assert split_label("bob=/x/y.mp4") == ("bob", "/x/y.mp4") and split_label("/x/y.mp4") == (None, "/x/y.mp4")
    merged = merge_boxes(np.array([[0, 0, 10, 10]]), np.array([[1, 1, 10, 10], [50, 50, 60, 60]]))
    np.testing.assert_array_equal(merged, [[0, 0, 10, 10], [50, 50, 60, 60]])
    img = np.zeros((40, 40, 3), np.uint8)
    img[10:20, 10:20] = 200
    img[12, 12] = 0
    out = blank_faces(img, np.array([[10, 10, 20, 20]], np.float32), pad=(0, 0, 0))
    assert len(np.unique(out[10:20, 10:20].reshape(-1, 3), axis=0)) == 1 and img[12, 12, 0] == 0
    assert jsonable({"a": float("nan"), "b": np.int64(3), "c": (np.float32(0.5),)}) == {"a": None, "b": 3, "c": [0.5]}


def test_method_names():
    assert method_from_name("/out/clip.blur.mp4") == "blur"
    assert method_from_name("my.clip.swap.mkv") == "swap"
    with pytest.raises(InvalidInputError, match="METHOD=PATH"):
        method_from_name("clip.mp4")
    assert parse_processed(["a/clip.mask.mp4", "custom=/x/clip.mp4"]) == {"mask": "a/clip.mask.mp4", "custom": "/x/clip.mp4"}
    with pytest.raises(InvalidInputError, match="twice"):
        parse_processed(["a/clip.mask.mp4", "b/other.mask.mp4"])
