"""``deid evaluate`` with the real models (MediaPipe Holistic, dlib) on the first
frames of the pancake clip, de-identified by the real pipeline with mask, blur and
pixelate. Roughly half a minute on two cores."""

from __future__ import annotations

import math

import pytest
from conftest import media_path

from deid.config import Config
from deid.io import VideoWriter, iter_frames, probe

pytestmark = pytest.mark.media

N = 30
#: AP difference within which two near-zero APs are not ranked (one keypoint, one frame)
NOISE = 0.02


@pytest.fixture(scope="module")
def pancake_eval(tmp_path_factory):
    from deid.evaluate import evaluate_outputs
    from deid.pipeline import process_video

    src = media_path("video/flipping_a_pancake.mkv")
    d = tmp_path_factory.mktemp("pancake_eval")
    info = probe(src)
    clip = d / "pancake.mp4"
    with VideoWriter(clip, info.width, info.height, info.fps, crf=18, timing="cfr") as w:
        for _, f in iter_frames(src, stop=N):
            w.write(f)
    cfg = Config().replace("audit.leak_check=false", "evaluate.identity_every=2")
    res = process_video(clip, d / "out", ["mask", "blur", "pixelate"], cfg)
    assert res.status == "done", res.error
    ev = evaluate_outputs(clip, {o.method: o.path for o in res.outputs}, d / "metrics", cfg, distractors=[],
                          progress=False)
    return {r["method"]: r for r in ev["summary"]}, ev


def test_original_against_itself_is_ap_one(pancake_eval):
    rows, ev = pancake_eval
    r = rows["original"]
    assert r["pose_backend"] == "mediapipe_holistic" and r["identity_backend"] == "dlib"
    measured = [g for g in ("overall", "body", "head", "face", "hands") if not math.isnan(r[f"ap_{g}"])]
    assert {"overall", "body", "head"} <= set(measured)
    for g in measured:
        assert r[f"ap_{g}"] == pytest.approx(1.0), g
    assert "mediapipe_holistic" in ev["table"] and "dlib" in ev["table"]


@pytest.mark.parametrize("method", ["mask", "blur", "pixelate"])
def test_head_and_face_keypoints_do_not_survive_better_than_the_body(pancake_eval, method):
    # MediaPipe's person detector works from the face: with the face hidden, Holistic
    # loses the whole person or places it upside down, so body AP collapses too (to
    # ~0 on this clip); the head and face can only be as bad or worse. NOISE: near 0, one
    # head keypoint landing in one of the 30 frames moves AP by ~0.005 (seen once in a
    # fresh-clone CI run: head 0.005 vs body 0.0 for mask; not reproduced in 7 reruns).
    r = pancake_eval[0][method]
    assert r["ap_head"] <= r["ap_body"] + NOISE and r["ap_head"] < 0.5
    if not math.isnan(r["ap_face"]):
        assert r["ap_face"] <= r["ap_body"] + NOISE
    assert r["ap_body"] < 1.0


def test_blurred_and_masked_faces_do_not_match_the_patient(pancake_eval):
    rows, _ = pancake_eval
    # control: the same check finds the face where it is untouched
    assert rows["original"]["frames_match_same_place"] > 0
    for m in ("mask", "blur"):
        r = rows[m]
        assert r["identity_frames"] == N // 2
        assert r["frames_match_patient"] == 0 and r["frames_match_same_place"] == 0, m
