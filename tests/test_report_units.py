"""Report building blocks: aggregation tables, frame choice, the thumbnail face check,
HTML helpers. Pure functions on small hand-made inputs (milliseconds each)."""

import math

import numpy as np
import pandas as pd
import pytest

from deid.report import html as H
from deid.report.data import order_methods
from deid.report.strips import (
    REDACTED_COLOR,
    box_coverage,
    choose_frames,
    draw_poses,
    redact_boxes,
    safe_thumbnail,
    uncovered_faces,
)
from deid.report.tables import clinical_table, identity_table, pose_table, status_table, worst_videos
from deid.types import Detections


def _summary(rows):
    return pd.DataFrame(rows)


def test_method_order_puts_sanity_row_and_swap_first():
    assert order_methods(["pixelate", "zz", "blur", "original", "swap", "mask", "aa"]) == [
        "original", "swap", "mask", "blur", "pixelate", "aa", "zz"]


def test_pose_table_is_the_mean_over_videos_ignoring_missing_groups():
    s = _summary([
        {"video": "a", "method": "blur", "ap_overall": 0.8, "ap_hands": np.nan},
        {"video": "b", "method": "blur", "ap_overall": 0.6, "ap_hands": 0.4},
        {"video": "a", "method": "mask", "ap_overall": 0.2, "ap_hands": np.nan},
    ])
    t = pose_table(s)
    assert list(t.index) == ["mask", "blur"]
    assert t.loc["blur", "ap_overall"] == pytest.approx(0.7)
    assert t.loc["blur", "ap_hands"] == pytest.approx(0.4)  # NaN (no hands in video a) does not count as 0
    assert math.isnan(t.loc["mask", "ap_hands"])
    assert t.loc["blur", "videos"] == 2


def test_identity_table_sums_counts_weights_distances_and_prefers_identity_frames():
    s = _summary([
        {"video": "a", "method": "blur", "frames": 100, "identity_frames": 20, "frames_match_patient": 1,
         "faces": 10, "mean_dist_patient": 0.7, "min_dist_patient": 0.55},
        {"video": "b", "method": "blur", "frames": 100, "identity_frames": 30, "frames_match_patient": 0,
         "faces": 30, "mean_dist_patient": 0.9, "min_dist_patient": 0.8},
    ])
    t = identity_table(s)
    r = t.loc["blur"]
    assert r["frames_checked"] == 50  # identity_every frames, not all 200 evaluated
    assert r["frames_match_patient"] == 1 and r["pct_match_patient"] == pytest.approx(2.0)
    assert r["mean_dist_patient"] == pytest.approx((0.7 * 10 + 0.9 * 30) / 40)
    assert r["min_dist_patient"] == pytest.approx(0.55)
    # counts measured on the identity table win
    assert identity_table(s, {"blur": 7}).loc["blur", "frames_checked"] == 7


def test_clinical_table_median_keeps_infinite_errors_and_drops_unmeasurable():
    c = pd.DataFrame([
        {"video": "a", "method": "blur", "feature": "f", "relative_error": 0.1, "original_value": 2.0},
        {"video": "b", "method": "blur", "feature": "f", "relative_error": 0.3, "original_value": 4.0},
        {"video": "c", "method": "blur", "feature": "f", "relative_error": np.nan, "original_value": np.nan},
        {"video": "a", "method": "mask", "feature": "f", "relative_error": np.inf, "original_value": 0.0},
        {"video": "a", "method": "original", "feature": "f", "relative_error": 0.0, "original_value": 2.0},
    ])
    t = clinical_table(c, pd.DataFrame())
    assert list(t.index) == ["mask", "blur"]  # the sanity row is not a method
    assert t.loc["blur", "f"] == pytest.approx(0.2)
    assert t.loc["mask", "f"] == np.inf
    assert t.attrs["measured"].loc["blur", "f"] == 2


def test_clinical_table_shows_a_feature_the_method_erased():
    """Mask hides the mouth: mouth opening is measurable on the original, not on the
    output. That method must stay in the table, marked lost, not vanish from it."""
    from deid.report.build import _clinical_section

    rows = []
    for v in ("a", "b"):
        rows.append({"video": v, "method": "blur", "feature": "mouth", "value": 1.1, "original_value": 1.0, "relative_error": 0.1})
        rows.append({"video": v, "method": "mask", "feature": "mouth", "value": np.nan, "original_value": 1.0, "relative_error": np.nan})
    rows.append({"video": "a", "method": "swap", "feature": "mouth", "value": 1.0, "original_value": 1.0, "relative_error": 0.0})
    rows.append({"video": "b", "method": "swap", "feature": "mouth", "value": np.nan, "original_value": 1.0, "relative_error": np.nan})
    rows.append({"video": "c", "method": "swap", "feature": "mouth", "value": np.nan, "original_value": np.nan, "relative_error": np.nan})
    t = clinical_table(pd.DataFrame(rows), pd.DataFrame())
    assert set(t.index) == {"blur", "mask", "swap"}
    assert np.isnan(t.loc["mask", "mouth"]) and t.attrs["lost"].loc["mask", "mouth"] == 2
    assert t.attrs["lost"].loc["swap", "mouth"] == 1 and t.attrs["measured"].loc["swap", "mouth"] == 1  # c: not on the original either
    html = _clinical_section(t, [])
    assert "lost (2 of 2 videos)" in html and "0.0; lost in 1 of 2 videos" in html
    only_lost = clinical_table(pd.DataFrame([r for r in rows if r["method"] == "mask"]), pd.DataFrame())
    assert list(only_lost.index) == ["mask"] and only_lost.attrs["lost"].loc["mask", "mouth"] == 2


def test_clinical_table_falls_back_to_summary_columns():
    s = _summary([{"video": "a", "method": "blur", "fe_blink_rate_per_min": 0.5},
                  {"video": "b", "method": "blur", "fe_blink_rate_per_min": 0.1}])
    t = clinical_table(None, s)
    assert t.loc["blur", "blink_rate_per_min"] == pytest.approx(0.3)


def test_status_from_audits_alone_and_missing_outputs_are_listed():
    audit = {"status": "done", "frames_read": 10, "counts": {"frames_fail_closed": 2, "regions_detected": 9,
                                                             "regions_pose": 1},
             "output": {"frames_written": 10}, "leak_audit": {"leaks": 0},
             "anonymizer_stats": {"faces_masked_gate": 3, "faces_masked_swap_failed": 1}}
    st = status_table(None, {("v", "swap"): audit}, [("v", "swap"), ("v", "blur")])
    swap = st[st["method"] == "swap"].iloc[0]
    assert swap["fail_closed_frames"] == 2 and swap["regions_pose"] == 1 and swap["swap_fallbacks"] == 4
    blur = st[st["method"] == "blur"].iloc[0]
    assert blur["state"] == "unknown" and "no status row" in blur["error"]


def test_worst_videos_rank_leaks_fail_closed_and_low_ap():
    s = _summary([
        {"video": "good", "method": "blur", "ap_overall": 0.9, "frames_match_patient": 0, "frames_match_original": 0},
        {"video": "leaky", "method": "blur", "ap_overall": 0.8, "frames_match_patient": 5, "frames_match_original": 1},
        {"video": "bad_pose", "method": "mask", "ap_overall": 0.1, "frames_match_patient": 0, "frames_match_original": 0},
        {"video": "bad_pose", "method": "original", "ap_overall": 1.0, "frames_match_patient": 50},
    ])
    st = pd.DataFrame([{"video": "good", "method": "blur", "fail_closed_frames": 0, "frames_read": 10, "leaks": 0},
                       {"video": "bad_pose", "method": "mask", "fail_closed_frames": 4, "frames_read": 10, "leaks": 0}])
    w = worst_videos(s, st, 5)
    assert list(w["leaks"].index) == ["leaky"]  # the original's own matches never count
    assert w["leaks"].loc["leaky", "leak_frames"] == 6
    assert list(w["lowest_ap"].index)[0] == "bad_pose"
    assert list(w["fail_closed"].index) == ["bad_pose"]
    # a match at the same place counts (the larger of the two original-face tests, not both)
    s2 = _summary([{"video": "v", "method": "blur", "frames_match_patient": 0, "frames_match_original": 0, "frames_match_same_place": 3},
                   {"video": "w", "method": "blur", "frames_match_patient": 1, "frames_match_original": 2, "frames_match_same_place": 2}])
    w2 = worst_videos(s2, pd.DataFrame(), 5)
    assert w2["leaks"]["leak_frames"].to_dict() == {"v": 3, "w": 3}


def test_archive_match_rate_is_per_frame_checked_for_faces():
    from deid.report.tables import per_video_distributions

    s = _summary([{"video": "v", "method": "blur", "frames": 100, "identity_frames": 20, "frames_match_patient": 5},
                  {"video": "u", "method": "blur", "frames": 50, "frames_match_patient": 5}])
    d = per_video_distributions(s, pd.DataFrame())["match_patient_pct"].set_index("video")["value"]
    assert d["v"] == pytest.approx(25.0) and d["u"] == pytest.approx(10.0)  # 5 of 20 checked; no count: of 50


# ----------------------------------------------------------------------------- frames and faces


def test_choose_frames_spreads_evenly_and_adds_worst_not_excluded():
    frames, why = choose_frames(100, 4, 2, {50: 0.1, 51: 0.05, 90: 0.2, 10: 0.9}, excluded={51})
    assert [f for f in frames if why[f] == "evenly spaced"] == [12, 37, 62, 87]  # segment centres, ties -> earlier
    worst = [f for f in frames if why[f].startswith("lowest")]
    assert worst == [50, 90]  # 51 is fail-closed; 50 is next lowest
    assert 51 not in frames
    # every frame excluded: nothing to show
    assert choose_frames(3, 2, 1, None, excluded={0, 1, 2}) == ([], {})


def test_box_coverage_of_faces_by_regions():
    faces = np.array([[10, 10, 20, 20], [50, 50, 60, 60], [0, 30, 10, 40], [0, 0, 10, 10]], np.float32)
    regions = np.array([[5, 5, 25, 25], [0, 30, 5, 40], [0, 0, 5, 10]], np.float32)
    cov = box_coverage(faces, regions)
    assert cov[0] == pytest.approx(1.0) and cov[1] == 0.0 and cov[2] == pytest.approx(0.5, abs=0.05)
    assert cov[3] == pytest.approx(0.75, abs=0.05)  # union of two regions, not the larger one
    assert uncovered_faces(faces, regions, 0.6).tolist() == [False, True, True, False]
    assert uncovered_faces(faces, None).all()  # no frames table: nothing counts as anonymized


def test_redact_boxes_flattens_the_region_and_outlines_it():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (60, 80, 3), np.uint8)
    out = redact_boxes(img, np.array([[20, 20, 40, 40]], np.float32), pad=0.0)
    inner = out[22:38, 22:38]
    assert inner.std(axis=(0, 1)).max() < 1e-6  # flat: nothing identifying left
    assert tuple(out[20, 30]) == REDACTED_COLOR
    assert np.array_equal(out[:10], img[:10]) and not np.shares_memory(out, img)


class _BoxDetector:
    """Reports a fixed face box (in full-frame pixels) unless its area is flat (redacted)."""

    name = "fixed"

    def __init__(self, box, frame_w):
        self.box = np.asarray(box, np.float32)
        self.frame_w = frame_w

    def detect(self, frames):
        out = []
        for f in frames:
            s = f.shape[1] / self.frame_w
            x1, y1, x2, y2 = (self.box * s).astype(int)
            patch = f[y1:y2, x1:x2]
            if patch.size and patch.reshape(-1, 3).std(axis=0).max() > 2:
                out.append(Detections((self.box * s)[None], np.array([0.9], np.float32)))
            else:
                out.append(Detections.empty())
        return out


def _textured(h=240, w=320):
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, (h, w, 3), np.uint8)


def test_landmarks_inside_a_region_count_as_anonymized():
    # MediaPipe on a solid mask: the box hangs below the head region, eyes and nose are inside it
    faces = np.array([[165, 60, 288, 183]], np.float32)
    regions = np.array([[150, 0, 290, 125]], np.float32)
    core_in = np.array([[[199, 95], [252, 89], [231, 118], [np.nan, np.nan], [np.nan, np.nan]]], np.float32)
    core_out = core_in.copy()
    core_out[0, 2] = (231, 140)  # the nose below the region: part of a real face shows
    assert box_coverage(faces, regions)[0] < 0.6
    assert not uncovered_faces(faces, regions, 0.6, core_in)[0]
    assert uncovered_faces(faces, regions, 0.6, core_out)[0]
    assert uncovered_faces(faces, None, 0.6, core_in)[0]


def test_redaction_keeps_the_pipelines_regions_and_hides_the_rest():
    img = _textured(100, 100)
    out = redact_boxes(img, np.array([[20, 20, 80, 80]], np.float32), pad=0.0, keep=np.array([[0, 0, 100, 50]], np.float32))
    assert np.array_equal(out[22:48, 22:78], img[22:48, 22:78])  # the anonymized part is left as it is
    assert out[55:78, 22:78].reshape(-1, 3).std(axis=0).max() < 1e-6  # the rest of the face is flat


def test_safe_thumbnail_keeps_covered_faces_and_redacts_uncovered_ones():
    frame = _textured()
    det = _BoxDetector([100, 60, 160, 130], 320)
    covered = np.array([[80, 30, 180, 150]], np.float32)
    thumb, n, note = safe_thumbnail(frame, covered, det, 160, 120)
    assert thumb.shape == (120, 160, 3) and n == 0 and note == ""
    thumb, n, note = safe_thumbnail(frame, np.zeros((0, 4), np.float32), det, 160, 120)
    assert n == 1 and "redacted" in note
    assert thumb[35:60, 55:75].reshape(-1, 3).std(axis=0).max() < 1e-6  # the face area is flat now


class _SecondFaceDetector:
    """Finds one face at first and, once that is redacted, another one elsewhere (as when
    NMS had hidden a second, overlapping face behind the first)."""

    name = "second_face"

    def __init__(self):
        self.calls = 0

    def detect(self, frames):
        self.calls += 1
        box = [10, 10, 50, 50] if self.calls == 1 else [200, 150, 260, 210]
        return [Detections(np.array([box], np.float32), np.array([0.9], np.float32)) for _ in frames]


class _NothingDetector:
    """What MediaPipe returns when it filtered every candidate out: empty arrays, landmarks included."""

    name = "nothing"

    def detect(self, frames):
        return [Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
                for _ in frames]


def test_safe_thumbnail_with_no_face_found():
    thumb, n, note = safe_thumbnail(_textured(480, 640), np.zeros((0, 4), np.float32), _NothingDetector())
    assert thumb is not None and thumb.shape == (240, 320, 3) and n == 0 and note == ""


class _BrokenDetector:
    name = "broken"

    def detect(self, frames):
        raise RuntimeError("model file missing")


def test_safe_thumbnail_fails_closed():
    frame = _textured()
    thumb, n, note = safe_thumbnail(frame, None, _SecondFaceDetector())
    assert thumb is None and "dropped" in note  # a face still found after redaction drops the thumbnail
    thumb, n, note = safe_thumbnail(frame, None, _BrokenDetector())
    assert thumb is None and "face check failed" in note


def test_thumbnails_do_not_sketch_the_face_outline_by_default():
    img = np.full((100, 100, 3), 40, np.uint8)
    kp = np.zeros((1, 133, 3), np.float32)
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    kp[0, 23:91] = np.stack([50 + 30 * np.cos(ang), 50 + 30 * np.sin(ang), np.ones(68)], axis=1)  # face only
    assert np.array_equal(draw_poses(img, 1.0, kp, kp), img)
    assert not np.array_equal(draw_poses(img, 1.0, kp, kp, face_landmarks=True), img)
    kp[0, 5:7] = [[20, 80, 1], [80, 80, 1]]  # shoulders are drawn
    assert not np.array_equal(draw_poses(img, 1.0, kp, None), img)


# ----------------------------------------------------------------------------- html


def test_html_helpers_escape_and_format():
    assert H.esc('<a href="x">') == "&lt;a href=&quot;x&quot;&gt;"
    assert H.fmt(float("nan"), "f3") == "–" and H.fmt(None) == "–" and H.fmt(pd.NA) == "–"
    assert H.fmt(float("inf"), "f1") == "∞" and H.fmt(1234.0, "int") == "1,234" and H.fmt(0.12345, "f3") == "0.123"
    t = H.table([{"m": "<b>", "v": 0.5}], [("m", "M", "s", ""), ("v", "V", "f2", "tip")])
    assert "&lt;b&gt;" in t and "0.50" in t and "<b>" not in t
    assert H.data_uri(b"\x89PNG", "image/png").startswith("data:image/png;base64,")


# ----------------------------------------------------------------------------- verdict, notes


def _id_rows(orig_faces, match=0):
    return _summary([
        {"video": "a", "method": "original", "frames": 10, "identity_frames": 10, "faces": orig_faces,
         "frames_match_patient": 0},
        {"video": "a", "method": "blur", "frames": 10, "identity_frames": 10, "faces": 0, "frames_match_patient": match},
    ])


def test_verdict_warns_when_the_original_videos_showed_no_face():
    from deid.report.build import _verdict

    st = pd.DataFrame([{"video": "a", "method": "blur", "leaks": 0, "error": ""}])
    v = _verdict(identity_table(_id_rows(0)), st)
    assert v["level"] == "warn" and v["original_faces"] == 0
    assert v["text"].startswith("Identity was not measured: no face was found in the original video(s)")
    assert _verdict(identity_table(_id_rows(12)), st)["level"] == "ok"
    assert _verdict(identity_table(_id_rows(0, match=2)), st)["level"] == "bad"  # a match still wins
    err = pd.DataFrame([{"video": "a", "method": "blur", "leaks": 0, "error": "boom"}])
    v = _verdict(identity_table(_id_rows(0)), err)
    assert v["level"] == "warn" and v["text"].endswith("1 output(s) reported an error (see the status section).")
    # a video that failed before any output has one row with no method: it is not an output
    err2 = pd.concat([err, pd.DataFrame([{"video": "b", "method": "", "leaks": None, "error": "not a video"}])])
    assert _verdict(identity_table(_id_rows(0)), err2)["text"].endswith(
        "1 output(s) reported an error and 1 video(s) produced no output (see the status section).")
    # the patient's reference photos were given: the frames were compared with them, say so
    photos = _id_rows(0).assign(patient_source="photos")
    v = _verdict(identity_table(photos), st)
    assert v["level"] == "warn" and v["text"].startswith("No face was found in the original video(s): the processed frames "
                                                         "were compared with the patient's reference photo(s) only")
    # no faces column (an older summary): unknown, not "none found"
    no_col = identity_table(_id_rows(0).drop(columns="faces"))
    assert _verdict(no_col, st)["level"] == "ok" and _verdict(no_col, st)["original_faces"] is None


def test_verdict_warns_when_the_reidentification_attack_still_finds_the_patient():
    """A swap trained for 62 steps passed the threshold and the leak audit, yet the attack
    ranked the patient first in 82 % of its faces against a chance of 33 %."""
    from deid.report.build import _verdict

    st = pd.DataFrame([{"video": "a", "method": "swap", "leaks": 0, "error": ""}])

    def tab(r1):
        return identity_table(_summary([
            {"video": "a", "method": "original", "frames": 10, "identity_frames": 10, "faces": 10, "frames_match_patient": 10},
            {"video": "a", "method": "swap", "frames": 10, "identity_frames": 10, "faces": 10, "frames_match_patient": 0,
             "attack_rank1": r1, "attack_chance_rank1": 0.33, "attack_identities": 3, "patient_source": "original_video"},
        ]))

    v = _verdict(tab(0.82), st)
    assert v["level"] == "warn" and "swap rank-1 0.82 against a chance of 0.33 among 3 identities" in v["text"]
    assert "frames of the original video itself" in v["text"]  # the references' source is said
    assert v["reidentified"] == [{"method": "swap", "attack_rank1": 0.82, "chance": 0.33, "identities": 3}]
    ok = _verdict(tab(0.40), st)  # within the margin of chance
    assert ok["level"] == "ok" and ok["reidentified"] == []


def test_config_section_says_only_the_first_max_frames_were_evaluated():
    from types import SimpleNamespace

    from deid.report.build import _config_section, _partly_evaluated

    video = {"video": "v", "width": 64, "height": 48, "fps": 25.0, "frame_count": 120, "frames_evaluated": 20,
             "processed": {"blur": "x.mp4"}}
    whole = dict(video, video="w", frames_evaluated=120)
    videos = {"v": video, "w": whole}
    html = _config_section(SimpleNamespace(run={"videos": list(videos.values())}, videos=videos), "fixed")
    assert "1 of 2 video(s) were evaluated on their first 20 frames only" in html and "120" in html
    assert _partly_evaluated(videos) == [{"video": "v", "frames_evaluated": 20, "frame_count": 120}]
    html0 = _config_section(SimpleNamespace(run={"videos": [whole]}, videos={"w": whole}), "fixed")
    assert "were evaluated on" not in html0


def test_strip_notes_only_methods_the_video_lists_or_is_expected_to_have(tmp_path):
    from deid.report.strips import build_strip

    def notes(entry, expected=()):
        s = build_strip("ward3__p17", entry, ["swap", "mask", "blur"], lambda p: tmp_path / p, None, None,
                        _NothingDetector(), expected=expected)
        return s.notes

    entry = {"processed": {"blur": "gone.blur.mp4"}}
    n = notes(entry)
    assert not [x for x in n if x.startswith(("mask:", "swap:"))]  # never asked for: nothing to say
    assert any(x.startswith("blur: processed video") for x in n)
    assert "mask: run.json lists no processed video for ward3__p17" in notes(entry, expected=["mask"])
    assert "swap: run.json lists no processed video for ward3__p17" in notes({"processed": {"blur": "b.mp4", "swap": None}})


def test_regions_resting_on_fewer_videos_are_named():
    """Face AP from the talking head only, hands AP from the pancake clip only: the AP
    table's Videos column (2) would say otherwise."""
    from deid.report.build import _regions_on_fewer_videos

    s = pd.DataFrame([
        {"video": "talk", "method": "blur", "ap_overall": 0.1, "ap_face": 0.5, "ap_hands": np.nan},
        {"video": "cook", "method": "blur", "ap_overall": 0.2, "ap_face": np.nan, "ap_hands": 0.2},
        {"video": "talk", "method": "swap", "ap_overall": 0.3, "ap_face": 0.4, "ap_hands": np.nan},
    ])
    assert _regions_on_fewer_videos(s) == ["face: 1 of 2 videos", "hands: 1 of 2 videos"]
    assert _regions_on_fewer_videos(s[s["video"] == "talk"]) == []


def test_status_overview_keeps_videos_that_failed_before_any_output():
    """A video refused before any output has one status row with method "": the overview
    (the JSON summary's "status", the archive table) dropped it, and crashed (KeyError
    'method') when it was the only row, e.g. a metrics folder whose one video was refused."""
    from deid.report.tables import status_overview

    only = pd.DataFrame([{"video": "c", "method": "", "state": "failed", "leaks": None, "error": "not a video"}])
    ov = status_overview(only)
    assert list(ov.index) == ["(before any output)"] and ov.loc["(before any output)", "errors"] == 1
    both = pd.concat([only, pd.DataFrame([{"video": "a", "method": "blur", "state": "done", "leaks": 0, "error": ""}])])
    ov = status_overview(both)
    assert list(ov.index) == ["blur", "(before any output)"] and int(ov["state_failed"].sum()) == 1


def test_verdict_warns_when_some_videos_had_no_face_to_compare():
    """Two videos; the attacker and the locator found no face in the second's original.
    The totals (20 original faces, 20 frames checked, 0 matches) used to give OK, as if
    both had been measured. A video whose faces were compared at the same place only
    (the pancake clip: HOG finds none, the locator 34) counts as measured."""
    from deid.report.build import _verdict

    rows = [
        {"video": "a", "method": "original", "identity_frames": 10, "faces": 20, "same_place_faces": 20},
        {"video": "a", "method": "blur", "identity_frames": 10, "faces": 0, "frames_match_patient": 0},
        {"video": "b", "method": "original", "identity_frames": 10, "faces": 0, "same_place_faces": 0},
        {"video": "b", "method": "blur", "identity_frames": 10, "faces": 0, "frames_match_patient": 0},
    ]
    s = _summary(rows)
    st = pd.DataFrame([{"video": v, "method": "blur", "leaks": 0, "error": ""} for v in "ab"])
    v = _verdict(identity_table(s), st, s)
    assert v["level"] == "warn" and v["videos_not_measured"] == ["b"]
    assert "Identity was not measured on 1 of 2 video(s)" in v["text"] and "(b)" in v["text"]
    assert _verdict(identity_table(s), st)["level"] == "ok"  # without the per-video rows: the totals only
    rows[2]["same_place_faces"] = 5  # compared at the same place: measured
    s2 = _summary(rows)
    assert _verdict(identity_table(s2), st, s2)["level"] == "ok"
    rows[2]["same_place_faces"] = 0
    rows[3]["frames_match_patient"] = 1  # a match still wins
    s3 = _summary(rows)
    assert _verdict(identity_table(s3), st, s3)["level"] == "bad"


def test_the_best_ap_card_names_every_method_of_a_tie(tmp_path):
    """Every method at AP 0 (MediaPipe loses the person when the face is hidden): the card
    said '0.000 (mask)', as if mask were best; a tie names them all."""
    import pandas as pd

    from deid.report import build_report
    from deid.report.build import ReportOptions
    from deid.report.testing import make_metrics_dir

    md = make_metrics_dir(tmp_path / "m", videos=("patient_a",), n_frames=8)
    s = pd.read_parquet(md / "summary.parquet")
    s.loc[s["method"] != "original", "ap_overall"] = 0.0
    methods = sorted(set(s.loc[s["method"] != "original", "method"]))
    assert len(methods) > 1
    import pyarrow.parquet as pq

    meta = pq.read_schema(md / "summary.parquet").metadata
    pq.write_table(pa_table(s, meta), md / "summary.parquet")
    html = build_report(md, tmp_path / "r.html", options=ReportOptions(strips=False)).read_text()
    card = html.split("best AP overall")[0].rsplit("<b>", 1)[1]
    assert card.startswith("0.000 (") and all(m in card for m in methods), card


def pa_table(df, meta):
    import pyarrow as pa

    t = pa.Table.from_pandas(df, preserve_index=False)
    return t.replace_schema_metadata({**(t.schema.metadata or {}), **(meta or {})})
