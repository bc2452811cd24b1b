"""The whole per-video pipeline on synthetic clips with the fake (but real-algorithm)
backends from deid.testing: outputs, frame counts, privacy, audit records, atomicity."""

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from deid.config import Config
from deid.io import has_sensitive_tags, probe, read_frames
from deid.pipeline import audit_path, discover_inputs, frames_path, output_path, process_video
from deid.testing import (
    ColorFaceDetector,
    ColorPresence,
    NoopAnonymizer,
    PatchIdentityEncoder,
    face_color_mask,
    fake_components,
    make_synthetic_video,
)

CFG = Config().replace("audit.sample_frames=8", "io.chunk_size=8", "track.lookahead=24")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    return make_synthetic_video(d / "patient.mp4", n_frames=36, hidden=[12, 13, 14], with_audio=True,
                                metadata={"creation_time": "2022-01-01T00:00:00Z", "location": "+40.0-074.0/"})


def face_pixels(frame):
    return int(face_color_mask(frame).sum())


@pytest.mark.parametrize("keyframes", [1, 4])
@pytest.mark.parametrize("method", ["blur", "pixelate", "mask"])
def test_every_method_hides_the_face(clip, tmp_path, method, keyframes):
    cfg = CFG.replace(f"track.keyframe_every={keyframes}")
    res = process_video(clip.path, tmp_path, [method], cfg, components=fake_components(cfg, [method]))
    assert res.status == "done", res.error
    if keyframes > 1:
        assert res.counts["keyframe_gap_frames_skipped"] > 0
    out = output_path(clip.path, tmp_path, method)
    assert out.exists() and out.name == f"patient.{method}.mp4"
    info = probe(out)
    assert info.frame_count == 36 and (info.width, info.height) == (160, 120)
    assert not info.has_audio and has_sensitive_tags(out) == []
    frames = read_frames(out)
    originals = read_frames(clip.path)
    enc = PatchIdentityEncoder()
    for i, (f, o, box) in enumerate(zip(frames, originals, clip.boxes)):
        d = enc.distance(enc.embed([o], [box[None]])[0], enc.embed([f], [box[None]])[0])[0, 0]
        assert d > enc.threshold, f"face still matches itself in frame {i} (distance {d:.2f})"
        if method != "pixelate":  # pixelation keeps a flat face-coloured block by design
            assert face_pixels(f) < 0.05 * max(1, face_pixels(o)), f"face colour visible in frame {i}"
    # the body is untouched far from the face
    assert np.abs(frames[5][110:, :].astype(int) - originals[5][110:, :].astype(int)).mean() < 6


def test_missed_frames_are_covered_by_interpolation(clip, tmp_path):
    comp = fake_components(CFG, ["mask"], pose=None)
    res = process_video(clip.path, tmp_path, ["mask"], CFG, components=comp, keep_plans=True)
    assert res.status == "done"
    hidden = [p for p in res.plans if p.index in (12, 13, 14)]
    assert all(p.faces and p.faces[0].source.value == "interpolated" for p in hidden)
    # hidden frames have a (differently coloured) face: it must be covered by the mask
    out = read_frames(output_path(clip.path, tmp_path, "mask"), [13])[0]
    box = clip.boxes[13].astype(int)
    assert (out[box[1] + 4 : box[3] - 4, box[0] + 4 : box[2] - 4] < 30).all()
    assert res.counts["regions_interpolated"] >= 3


def test_audit_record_and_frames_table(clip, tmp_path):
    res = process_video(clip.path, tmp_path, ["blur", "mask"], CFG, components=fake_components(CFG, ["blur", "mask"]))
    assert res.status == "done"
    for m in ("blur", "mask"):
        out = output_path(clip.path, tmp_path, m)
        rec = json.loads(audit_path(out).read_text())
        assert rec["status"] == "done" and rec["method"] == m
        assert len(rec["input"]["sha256"]) == 64 and rec["config_hash"]
        assert rec["frames_read"] == 36 and rec["output"]["frames_written"] == 36
        assert rec["counts"]["regions_detected"] >= 30
        la = rec["leak_audit"]
        # 8 evenly spaced + the frames whose regions are interpolated / held only (the
        # detector misses frames 12-14 of this clip), those not already sampled
        assert la["leaks"] == 0 and la["checked_frames"] == 8 + la["risk_frames"] and 1 <= la["risk_frames"] <= 8
        assert 0 < rec["timings_s"]["analyze"] <= rec["timings_s"]["total"]
        assert rec["output"]["audio"] is False  # the input has sound; it was not kept
        t = pq.read_table(frames_path(out)).to_pandas()
        assert list(t["frame"]) == list(range(36))
        assert set(t["decision"]) <= {"ok", "fail_closed"}
        assert t["boxes"].map(len).sum() >= 33


def test_leak_audit_blocks_publication(clip, tmp_path):
    comp = fake_components(CFG, [], anonymizers={"blur": NoopAnonymizer()})
    # the synthetic faces are ~26x33 px: below the default min_face_px they are not checked
    res = process_video(clip.path, tmp_path, ["blur"], CFG, components=comp)
    assert res.status == "done" and res.outputs[0].leak["faces_too_small"] > 0
    assert res.outputs[0].leak["input_faces"] == 0
    for p in tmp_path.iterdir():
        p.unlink()
    CFG_SMALL = CFG.replace("audit.min_face_px=16")
    res = process_video(clip.path, tmp_path, ["blur"], CFG_SMALL, components=comp)
    assert res.status == "failed" and res.error_kind == "leak"
    assert "leak audit" in res.error and "Raise anonymize.blur.strength" in res.error  # the key to change, spelt as --set takes it
    assert list(tmp_path.iterdir()) == [], "nothing may be published when the audit finds a leak"
    # with on_leak=flag the output is kept and marked
    cfg = CFG_SMALL.replace("audit.on_leak=flag")
    res = process_video(clip.path, tmp_path, ["blur"], cfg, components=comp)
    assert res.status == "done" and res.outputs[0].leak["leaks"] > 0


def test_fail_closed_redacts_frames_without_head(tmp_path):
    clip = make_synthetic_video(tmp_path / "c.mp4", n_frames=40, hidden=list(range(10, 34)))
    cfg = CFG.replace("track.max_gap=2", "track.hold_frames=2", "track.lookahead=8")
    comp = fake_components(cfg, ["blur"], pose=None, presence=ColorPresence())
    res = process_video(clip.path, tmp_path / "o", ["blur"], cfg, components=comp, keep_plans=True)
    assert res.status == "done"
    closed = [p.index for p in res.plans if p.decision.value == "fail_closed"]
    assert closed and set(closed) <= set(range(10, 34))
    assert res.counts["frames_fail_closed"] == len(closed)
    frames = read_frames(output_path(clip.path, tmp_path / "o", "blur"), closed[:3])
    assert all(np.abs(f.astype(int) - 128).max() <= 3 for f in frames), "fail-closed frames are redacted"
    # flag policy keeps them (counted) ; drop policy removes them
    res_flag = process_video(clip.path, tmp_path / "f", ["blur"], cfg.replace("track.fail_closed=flag"), components=comp)
    assert res_flag.counts["frames_fail_closed"] == len(closed)
    assert probe(output_path(clip.path, tmp_path / "f", "blur")).frame_count == 40
    res_drop = process_video(clip.path, tmp_path / "d", ["blur"], cfg.replace("track.fail_closed=drop"), components=comp)
    assert probe(output_path(clip.path, tmp_path / "d", "blur")).frame_count == 40 - len(closed)
    assert res_drop.status == "done" and res_drop.counts["frames_fail_closed"] == len(closed)


def test_pose_fallback_places_heads(tmp_path):
    clip = make_synthetic_video(tmp_path / "c.mp4", n_frames=40, hidden=list(range(10, 34)))
    cfg = CFG.replace("track.max_gap=2", "track.hold_frames=2", "track.lookahead=8")
    comp = fake_components(cfg, ["mask"], presence=ColorPresence())
    res = process_video(clip.path, tmp_path / "o", ["mask"], cfg, components=comp, keep_plans=True)
    assert res.counts["frames_fail_closed"] == 0
    # pose runs on every missed frame once the hold (2 frames) has ended: 24 - 2 = 22 runs,
    # plus its checks on every 16th frame with a face (0, 16 is hidden, 32 hidden; 34+ none)
    assert res.counts["regions_pose"] > 0 and res.counts["pose_runs"] == 22 + res.counts["pose_checks"]
    assert res.counts["pose_checks"] == 1
    assert res.counts["pose_skipped_held"] == 2
    frames = read_frames(output_path(clip.path, tmp_path / "o", "mask"), list(range(10, 34)))
    for i, f in zip(range(10, 34), frames):
        box = clip.boxes[i].astype(int)
        assert (f[box[1] + 5 : box[3] - 5, box[0] + 5 : box[2] - 5] < 40).mean() > 0.9, f"face not masked in frame {i}"


def test_refuses_to_overwrite(clip, tmp_path):
    comp = fake_components(CFG, ["mask"])
    assert process_video(clip.path, tmp_path, ["mask"], CFG, components=comp).status == "done"
    res = process_video(clip.path, tmp_path, ["mask"], CFG, components=comp)
    assert res.status == "failed" and "--overwrite" in res.error
    assert process_video(clip.path, tmp_path, ["mask"], CFG, components=comp, overwrite=True).status == "done"
    # never over the input, even with overwrite: an output dir equal to the input's dir
    # with a name clash cannot happen because outputs carry the method; simulate it:
    res = process_video(clip.path, clip.path.parent, ["mask"], CFG, components=comp, dry_run=True)
    assert res.status in ("planned", "failed")


def test_dry_run_writes_nothing(clip, tmp_path):
    res = process_video(clip.path, tmp_path / "new", ["blur"], CFG, dry_run=True)
    assert res.status == "planned" and not (tmp_path / "new").exists()


def test_failure_midway_leaves_nothing(clip, tmp_path):
    class Boom(ColorFaceDetector):
        def detect(self, frames):
            if self.calls > 20:
                raise RuntimeError("detector crashed")
            return super().detect(frames)

    comp = fake_components(CFG, ["blur"], detector=Boom())
    res = process_video(clip.path, tmp_path, ["blur"], CFG, components=comp)
    assert res.status == "failed" and "detector crashed" in res.error
    assert list(tmp_path.iterdir()) == []


def test_keep_audio_option(clip, tmp_path):
    cfg = CFG.replace("io.keep_audio=true")
    res = process_video(clip.path, tmp_path, ["mask"], cfg, components=fake_components(cfg, ["mask"]))
    assert res.status == "done" and probe(output_path(clip.path, tmp_path, "mask")).has_audio
    assert json.loads(audit_path(output_path(clip.path, tmp_path, "mask")).read_text())["output"]["audio"] is True
    silent = make_synthetic_video(tmp_path / "silent.mp4", n_frames=10)
    out = tmp_path / "o2"
    assert process_video(silent.path, out, ["mask"], cfg, components=fake_components(cfg, ["mask"])).status == "done"
    assert json.loads(audit_path(output_path(silent.path, out, "mask")).read_text())["output"]["audio"] is False


def test_timestamps_follow_input(clip, tmp_path):
    import av

    process_video(clip.path, tmp_path, ["mask"], CFG, components=fake_components(CFG, ["mask"]))
    with av.open(str(output_path(clip.path, tmp_path, "mask"))) as c:
        times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    assert times == pytest.approx([i / 25 for i in range(36)], abs=1e-3)


def test_discover_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.mp4").write_bytes(b"")
    (tmp_path / "a" / "notes.txt").write_text("")
    (tmp_path / "a" / "b").mkdir()
    (tmp_path / "a" / "b" / "y.MOV").write_bytes(b"")
    (tmp_path / "a" / "b" / "cam.ts").write_bytes(b"")  # broadcast / hospital recorder formats
    (tmp_path / "a" / "b" / "or.mxf").write_bytes(b"")
    found = discover_inputs([tmp_path / "a", tmp_path / "missing.mp4"])
    assert [p.name for p in found] == ["cam.ts", "or.mxf", "y.MOV", "x.mp4", "missing.mp4"]  # sorted by path


def test_memory_does_not_hold_the_video(tmp_path, monkeypatch):
    """The frames waiting for their plans never exceed lookahead + one chunk."""
    import deid.pipeline as P

    clip = make_synthetic_video(tmp_path / "long.mp4", n_frames=120, width=64, height=48)
    peak = {"n": 0}
    orig = P.deque

    class Watched(orig):
        def extend(self, it):
            super().extend(it)
            peak["n"] = max(peak["n"], len(self))

    monkeypatch.setattr(P, "deque", Watched)
    cfg = CFG.replace("io.chunk_size=8", "track.lookahead=20")
    process_video(clip.path, tmp_path / "o", ["blur"], cfg, components=fake_components(cfg, ["blur"]))
    assert 0 < peak["n"] <= 20 + 8 + 8


def test_byte_bounded_batches_give_the_same_output(clip, tmp_path, monkeypatch):
    """io.batch_mb caps a batch at 3 frames of this clip: the same regions as the
    frame-count batches (high-resolution videos take this path)."""
    import deid.pipeline as P

    sizes: list[int] = []
    real = P.FrameAnalyzer.analyze
    monkeypatch.setattr(P.FrameAnalyzer, "analyze", lambda self, frames, start: sizes.append(len(frames)) or real(self, frames, start))
    runs = {}
    for name, cfg in (("count", CFG), ("bytes", CFG.replace(f"io.batch_mb={3.5 * 160 * 120 * 3 / (1 << 20)}"))):
        sizes.clear()
        res = process_video(clip.path, tmp_path / name, ["blur"], cfg, components=fake_components(cfg, ["blur"]))
        assert res.status == "done", res.error
        out = output_path(clip.path, tmp_path / name, "blur")
        runs[name] = (pq.read_table(frames_path(out)).to_pandas(), read_frames(out))
        assert max(sizes) == (8 if name == "count" else 3), sizes
    (ta, fa), (tb, fb) = runs["count"], runs["bytes"]
    assert list(ta["decision"]) == list(tb["decision"])
    assert [np.round(np.asarray(list(x), float), 3).tolist() for x in ta["boxes"]] == [
        np.round(np.asarray(list(x), float), 3).tolist() for x in tb["boxes"]]
    # (pixels are not compared: libx264's frame threads make two encodes of the same
    # frames differ now and then — docs/benchmarks.md; the regions decide what is hidden)
    assert len(fa) == len(fb) == 36


def test_segments_with_context_match_whole_video(clip, tmp_path):
    """Rendering [0, 20) and [20, 36) separately, each with context, gives the same
    regions as one whole-video run — the basis of the Ray segment sharding."""
    from deid.pipeline import render_segment

    comp = fake_components(CFG, ["mask"], pose=None)
    info = probe(clip.path)
    whole = render_segment(str(clip.path), info, {"mask": tmp_path / "w.mp4"}, CFG, comp, keep_plans=True)
    parts = []
    for k, (a, b) in enumerate([(0, 20), (20, 36)]):
        seg = render_segment(str(clip.path), info, {"mask": tmp_path / f"s{k}.mp4"}, CFG, comp,
                             start=a, stop=b, context=CFG.track.lookahead, keep_plans=True)
        assert seg.frames_read == b - a and seg.written["mask"] == b - a
        assert probe(tmp_path / f"s{k}.mp4").frame_count == b - a
        parts += seg.book.plans
    assert [p.index for p in parts] == list(range(36))
    for p, q in zip(parts, whole.book.plans):
        assert p.decision == q.decision and len(p.faces) == len(q.faces)
        for f, g in zip(p.faces, q.faces):
            assert np.allclose(f.box, g.box, atol=1e-3) and f.source == g.source


def test_output_names_are_collision_free(tmp_path):
    from deid.pipeline import plan_inputs

    for d in ("a", "b", "tree/x", "tree/y"):
        (tmp_path / d).mkdir(parents=True)
    for f in ("a/clip.mp4", "b/clip.mp4", "tree/x/clip.mp4", "tree/y/clip.mp4", "tree/top.mov"):
        (tmp_path / f).write_bytes(b"")
    plan = plan_inputs([tmp_path / "a/clip.mp4", tmp_path / "b/clip.mp4", tmp_path / "tree"])
    dests = [str(p.subdir / p.name) for p in plan]
    assert len(set(dests)) == len(dests) == 5
    flat = [p for p in plan if str(p.subdir) == "."]
    assert {p.name for p in flat} >= {"top"} and all(p.name.startswith("clip-") for p in flat if p.name != "top")
    assert {str(p.subdir) for p in plan if p.path.parent.parent.name == "tree"} == {"x", "y"}


def test_frame_rows_are_compact_and_round_trip(tmp_path):
    import pickle

    from deid.audit import FrameRows, write_frames_table

    rows = [(0, "ok", False, [], []), (1, "ok", True, ["detected", "held"], [[1.04, 2, 3, 4], [5, 6, 7, 8.26]]),
            (2, "fail_closed", True, [], [])]
    fr = FrameRows(rows)
    assert list(fr) == [(0, "ok", False, [], []), (1, "ok", True, ["detected", "held"], [[1.0, 2, 3, 4], [5, 6, 7, pytest.approx(8.3)]]),
                        (2, "fail_closed", True, [], [])]
    both = FrameRows(fr)
    both.extend(pickle.loads(pickle.dumps(fr)))  # archive segments are pickled and merged
    assert len(both) == 6
    t = pq.read_table(write_frames_table(tmp_path / "f.parquet", fr, "blur")).to_pylist()
    assert [r["frame"] for r in t] == [0, 1, 2] and t[1]["sources"] == ["detected", "held"]
    assert t[2]["decision"] == "fail_closed" and t[1]["boxes"][1][3] == pytest.approx(8.3) and t[0]["method"] == "blur"
    assert pq.read_table(write_frames_table(tmp_path / "e.parquet", FrameRows(), "mask")).num_rows == 0
    # a long video: bytes per frame, not a Python object per frame
    big = FrameRows()
    for i in range(30000):
        big.append(i, "ok", True, ["interpolated"], [[1.0, 2.0, 3.0, 4.0]])
    size = sum(getattr(big, n).buffer_info()[1] * getattr(big, n).itemsize for n in ("frame", "decision", "present", "nfaces", "source", "boxes"))
    assert size < 30000 * 32
    with pytest.raises(ValueError):
        big.append(1, "ok", True, ["held"], [])


def test_batch_evaluation_keeps_same_named_inputs_apart(tmp_path, monkeypatch):
    """`deid anonymize a/clip.mp4 b/clip.mp4 --evaluate`: each video's metrics go in
    under its own id (the output's collision-free name), not both under "clip"."""
    import deid.evaluate
    from deid.batch import run_batch

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        make_synthetic_video(tmp_path / d / "clip.mp4", n_frames=6)
    seen = []
    monkeypatch.setattr(deid.evaluate, "evaluate_outputs",
                        lambda original, processed, out_dir, cfg, video_id=None: seen.append((Path(original).parent.name, video_id, sorted(processed))))
    res = run_batch([tmp_path / "a/clip.mp4", tmp_path / "b/clip.mp4"], tmp_path / "out", ["mask"], CFG, progress=False,
                    evaluate=True, components=fake_components(CFG, ["mask"]))
    assert [r.status for r in res] == ["done", "done"]
    assert len(seen) == 2 and {v for _, v, _ in seen} == {Path(r.outputs[0].path).name.split(".")[0] for r in res}
    assert len({v for _, v, _ in seen}) == 2


def test_leak_audit_uses_the_encoders_own_threshold(clip, tmp_path):
    """audit.threshold's 0.6 default is dlib's Euclidean rule; an encoder with another
    scale (ArcFace, cosine: 0.72) keeps its own unless the config names a number."""
    from deid.audit import leak_audit
    from deid.identity import effective_threshold
    from deid.testing import PatchIdentityEncoder

    class Cosine(PatchIdentityEncoder):
        threshold = 0.72

    assert effective_threshold(Cosine(), 0.6) == 0.72
    assert effective_threshold(Cosine(), 0.5) == 0.5
    assert effective_threshold(PatchIdentityEncoder(), 0.6) == 0.6
    assert effective_threshold(object(), None) == 0.6
    cfg = CFG.replace("audit.min_face_px=16")
    assert leak_audit(clip.path, clip.path, cfg.audit, Cosine())["threshold"] == 0.72
    assert leak_audit(clip.path, clip.path, cfg.replace("audit.threshold=0.5").audit, Cosine())["threshold"] == 0.5


def test_dropped_first_frames_keep_the_picture_in_step_with_kept_audio(tmp_path):
    """fail_closed=drop removes the first frames; the frames left keep their times (the
    first written one is not pulled to 0), so audio kept beside them stays in sync."""
    import av

    clip = make_synthetic_video(tmp_path / "c.mp4", n_frames=30, hidden=list(range(0, 8)), with_audio=True)
    cfg = CFG.replace("track.max_gap=2", "track.hold_frames=2", "track.lookahead=8", "track.fail_closed=drop", "io.keep_audio=true")
    comp = fake_components(cfg, ["blur"], pose=None, presence=ColorPresence())
    res = process_video(clip.path, tmp_path / "d", ["blur"], cfg, components=comp, keep_plans=True)
    closed = [p.index for p in res.plans if p.decision.value == "fail_closed"]
    assert res.status == "done" and closed and closed[0] == 0
    first_kept = next(i for i in range(30) if i not in closed)
    with av.open(str(output_path(clip.path, tmp_path / "d", "blur"))) as c:
        t0 = float(next(c.decode(video=0)).time)
        assert c.streams.audio
    assert t0 == pytest.approx(first_kept / 25, abs=1e-3)


def test_without_the_pose_fallback_fail_closed_still_has_a_person_check(caplog):
    """track.pose_fallback=false must not turn fail-closed off: person presence is still
    built (else a missed face passes as 'nobody there'), and the setting is warned about,
    as is fail_closed=flag."""
    from deid.pipeline import Components

    with caplog.at_level("WARNING", logger="deid.pipeline"):
        comp = Components.build(Config().replace("track.pose_fallback=false", "audit.leak_check=false"), [])
    assert comp.pose is None and comp.presence is not None
    assert "pose_fallback=false" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="deid.pipeline"):
        Components.build(Config().replace("track.fail_closed=flag", "audit.leak_check=false"), [], presence=comp.presence)
    assert "fail_closed=flag" in caplog.text


def test_a_missed_face_without_the_pose_fallback_fails_closed(tmp_path):
    clip = make_synthetic_video(tmp_path / "c.mp4", n_frames=40, hidden=list(range(10, 34)))
    cfg = CFG.replace("track.max_gap=2", "track.hold_frames=2", "track.lookahead=8", "track.pose_fallback=false")
    comp = fake_components(cfg, ["blur"], pose=None, presence=ColorPresence())
    res = process_video(clip.path, tmp_path / "o", ["blur"], cfg, components=comp, keep_plans=True)
    closed = {p.index for p in res.plans if p.decision.value == "fail_closed"}
    assert res.status == "done" and len(closed) >= 15 and closed <= set(range(10, 34))


def test_leak_audit_shares_the_input_side_between_outputs(clip, tmp_path, monkeypatch):
    """Several outputs of one video: the input's faces and embeddings are computed once,
    and each output's verdict is what a separate audit gives (a leaking output next to a
    clean one is still caught)."""
    import deid.audit as A

    cfg = CFG.replace("audit.min_face_px=16", "audit.on_leak=flag")
    comp = fake_components(cfg, ["blur"], anonymizers={"noop": NoopAnonymizer()})
    calls = []
    real = A._audit_reference
    monkeypatch.setattr(A, "_audit_reference", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = process_video(clip.path, tmp_path, ["blur", "noop"], cfg, components=comp, keep_plans=True)
    assert res.status == "done" and len(calls) == 1
    got = {o.method: o.leak for o in res.outputs}
    assert got["blur"]["leaks"] == 0 and got["noop"]["leaks"] > 0
    enc = comp.identity
    for m in ("blur", "noop"):
        rows = A.FrameRows([(p.index, p.decision, p.person_present, [f.source for f in p.faces], [f.box for f in p.faces])
                            for p in res.plans])
        alone = A.leak_audit(clip.path, output_path(clip.path, tmp_path, m), cfg.audit, enc,
                             plans={p.index: p for p in res.plans}, rows=rows)
        assert alone["risk_frames"] > 0
        shared = dict(got[m])
        for d in (alone, shared):
            d.pop("seconds")
        assert alone == shared, m


def test_leak_audit_pairs_frames_when_fail_closed_frames_are_dropped(tmp_path):
    """fail_closed=drop shortens the output: output frame j is not input frame j any
    more. The audit must compare each output frame with its own input frame (it compared
    frames of the same number, i.e. different pictures, and missed a face left visible)."""
    clip = make_synthetic_video(tmp_path / "c.mp4", n_frames=40, hidden=list(range(10, 34)))
    cfg = CFG.replace("track.max_gap=2", "track.hold_frames=2", "track.lookahead=8", "track.fail_closed=drop",
                      "audit.min_face_px=16", "audit.on_leak=flag")
    comp = fake_components(cfg, [], pose=None, presence=ColorPresence(), anonymizers={"noop": NoopAnonymizer()})
    res = process_video(clip.path, tmp_path / "o", ["noop"], cfg, components=comp, keep_plans=True)
    closed = [p.index for p in res.plans if p.decision.value == "fail_closed"]
    assert res.status == "done" and closed
    assert probe(output_path(clip.path, tmp_path / "o", "noop")).frame_count == 40 - len(closed)
    leak = res.outputs[0].leak
    # every kept frame with a face is an untouched face: the last frame (input 39) included
    assert 39 in leak["leak_frames"] and leak["input_faces"] >= 3
    assert not set(leak["leak_frames"]) & set(closed)


def test_a_full_disk_is_named_as_such_and_leaves_nothing(clip, tmp_path, monkeypatch, caplog):
    """ENOSPC (or a read-only / over-quota folder) is the storage's fault, not deid's:
    a one-line error naming the video and the folder, no traceback, nothing left."""
    import errno

    import deid.audit

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / ".patient.blur.frames.parquet.tmp"))

    monkeypatch.setattr(deid.audit, "write_frames_table", full)
    comp = fake_components(CFG, ["blur"])
    with caplog.at_level("ERROR"):
        res = process_video(clip.path, tmp_path, ["blur"], CFG, components=comp)
    assert res.status == "failed" and res.error_kind == "output_write"
    assert res.error == f"{clip.path}: cannot write to {tmp_path}: No space left on device"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # no 'unexpected error' traceback
    assert list(tmp_path.iterdir()) == []


def test_other_os_errors_stay_unexpected(clip, tmp_path, monkeypatch):
    import errno

    import deid.audit

    def broken(*a, **k):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(deid.audit, "write_frames_table", broken)
    res = process_video(clip.path, tmp_path, ["blur"], CFG, components=fake_components(CFG, ["blur"]))
    assert res.status == "failed" and res.error_kind == "internal" and "unexpected OSError" in res.error
    assert list(tmp_path.iterdir()) == []


def test_the_audit_grows_with_the_video_and_has_the_plans_of_its_frames(clip, tmp_path, monkeypatch):
    """audit.sample_per_minute raises the evenly spaced count on long videos (here made
    'long' by asking 600 a minute of a 1.44 s clip: 15 frames); the pipeline keeps the
    plans of exactly the frames the audit then samples."""
    import deid.audit

    cfg = CFG.replace("audit.sample_per_minute=600")
    seen = {}
    real = deid.audit.leak_audit

    def spy(*a, **k):
        seen["cfg"], seen["plans"] = a[2], set(k["plans"])
        return real(*a, **k)

    monkeypatch.setattr(deid.audit, "leak_audit", spy)
    res = process_video(clip.path, tmp_path, ["blur"], cfg, components=fake_components(cfg, ["blur"]))
    assert res.status == "done"
    la = res.outputs[0].leak
    assert seen["cfg"].sample_frames == 15 and la["checked_frames"] == 15 + la["risk_frames"]
    assert seen["plans"] == set(deid.audit.sample_indices(36, 15))


def test_a_swap_output_mostly_masked_is_warned_about(caplog):
    """A short swap training leaves the gate masking most faces: safe, but not what was
    asked for, so the run says so (an archive's finalize shares this code)."""
    from deid.pipeline import _warn_mostly_masked

    with caplog.at_level("WARNING", logger="deid.pipeline"):
        _warn_mostly_masked("p.mp4", {"faces": 200, "faces_swapped": 12, "faces_masked_gate": 188})
        _warn_mostly_masked("q.mp4", {"faces": 200, "faces_swapped": 150, "faces_masked_gate": 40, "faces_masked_swap_failed": 10})
    (msg,) = [r.getMessage() for r in caplog.records]
    assert msg.startswith("p.mp4: the swap replaced 12 of 200 face(s); 188 were masked instead")
