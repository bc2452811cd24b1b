"""Archive runs in one process (deid.archive.run_archive_in_process): the bookkeeping the
Ray job shares — status rows, skip / resume decisions, no half-written outputs."""

import csv
import json
import os
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from deid.archive import (
    STATUS_FILE,
    ArchiveRun,
    finished_segment,
    StatusTable,
    default_work_root,
    load_manifest,
    plan_video,
    render_planned_segment,
    run_archive_in_process,
    swap_model_name,
    swap_name_key,
)
from deid.config import Config
from deid.io import probe, scan_stream
from deid.pipeline import audit_path, frames_path, process_video, sha256_file
from deid.testing import fake_components, make_synthetic_video

# the fakes from deid.testing, built by name (so worker processes can build them too)
CFG = Config().replace(
    "detect.backend=color", "track.pose_fallback=false", "audit.identity_backend=patch", "audit.sample_frames=8",
    "io.chunk_size=8", "track.lookahead=24", "ray.segment_overlap=24", "ray.segment_frames=20",
)


@pytest.fixture()
def archive(tmp_path):
    root = tmp_path / "archive"
    (root / "ward").mkdir(parents=True)
    make_synthetic_video(root / "one.mp4", n_frames=50, hidden=[20, 21])
    make_synthetic_video(root / "ward" / "two.mp4", n_frames=24)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "patient_id", "methods"])
        w.writerows([["one.mp4", "p1", "blur,mask"], ["ward/two.mp4", "p2", "pixelate"], ["broken.mp4", "p3", "blur"]])
    return root


def _files(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def _mtimes(d):
    return {p: p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file() and p.name != STATUS_FILE}


def test_two_done_one_failed_then_a_rerun_does_nothing(archive, tmp_path):
    out = tmp_path / "out"
    man = load_manifest(archive / "manifest.csv", out_dir=out)
    run = run_archive_in_process(man, CFG, out)
    assert run.states == {"one": "done", "ward__two": "done", "broken": "failed"}
    assert not run.ok
    st = pq.read_table(out / STATUS_FILE).to_pandas()
    assert sorted(zip(st.video, st.method, st.state)) == [
        ("broken", "", "failed"), ("one", "blur", "done"), ("one", "mask", "done"), ("ward__two", "pixelate", "done")]
    broken = st[st.video == "broken"].iloc[0]
    assert "not a video file" in broken.error and broken.error_kind == "invalid_input"
    done = st[st.state == "done"]
    assert (done.input_sha256.str.len() == 64).all() and (done.config_hash.str.len() == 16).all()
    assert list(done.frames_written) == [50, 50, 24]
    assert _files(out) == sorted([
        "one.blur.audit.json", "one.blur.frames.parquet", "one.blur.mp4", "one.mask.audit.json", "one.mask.frames.parquet",
        "one.mask.mp4", STATUS_FILE, "ward/two.pixelate.audit.json", "ward/two.pixelate.frames.parquet", "ward/two.pixelate.mp4"])
    # segments were private: the work folder is gone once every video finished
    assert not default_work_root(out).exists()
    # the segmented render has the frames and timestamps of a whole-video run
    whole = process_video(archive / "one.mp4", tmp_path / "whole", ["blur"], CFG, components=fake_components(CFG, ["blur"], pose=None))
    assert whole.status == "done"
    a, b = out / "one.blur.mp4", tmp_path / "whole" / "one.blur.mp4"
    assert probe(a).frame_count == probe(b).frame_count == 50
    assert list(scan_stream(a).pts) == list(scan_stream(b).pts)
    frames = pq.read_table(frames_path(a)).to_pandas()
    assert list(frames.frame) == list(range(50))
    rec = json.loads(audit_path(a).read_text())
    assert rec["status"] == "done" and rec["frames_read"] == 50 and rec["leak_audit"]["leaks"] == 0
    assert rec["counts"]["regions_interpolated"] >= 2, "the hidden frames were covered across the segment junction"

    before = _mtimes(out)
    again = run_archive_in_process(load_manifest(archive / "manifest.csv", out_dir=out), CFG, out)
    assert again.states == {"one": "skipped", "ward__two": "skipped", "broken": "failed"}
    assert again.progress.frames == 0
    assert _mtimes(out) == before, "a rerun rewrites no output"
    assert len(StatusTable.load(out / STATUS_FILE)) == 4


def test_a_killed_run_resumes_from_its_segments_and_leaves_no_partials(archive, tmp_path):
    out = tmp_path / "out"
    man = load_manifest(archive / "manifest.csv", out_dir=out)
    one = man.entries[0]
    work = default_work_root(out)
    # the "killed" run: planned one.mp4, rendered its first segment, died while writing
    # the second segment and while publishing an output
    plan = plan_video(one, CFG, out, work, StatusTable())
    assert len(plan.segments) == 3
    first = render_planned_segment(plan, 0, CFG, fake_components(CFG, ["blur", "mask"], pose=None))
    assert first.ok and first.frames_read == 20
    (out).mkdir(exist_ok=True)
    stale_out = out / ".one.blur.mp4.partial-dead0001.mp4"
    stale_out.write_bytes(b"half")
    stale_seg = default_work_root(out) / os.path.basename(plan.work_dir) / ".seg-00001.blur.mp4.partial-dead0002.mp4"
    stale_seg.write_bytes(b"half")

    # a stopped job's worker-death counters do not carry over: they count one run's attempts
    attempts = default_work_root(out) / os.path.basename(plan.work_dir) / "seg-00001.attempts"
    attempts.write_text("9")
    probe_run = ArchiveRun(man, CFG, out)
    assert probe_run.accept_plan(one, plan) == [0, 1, 2] and not attempts.exists()
    assert finished_segment(plan, 0, "mp4") is not None and finished_segment(plan, 1, "mp4") is None

    run = run_archive_in_process(man, CFG, out)
    assert run.states["one"] == "done"
    assert run.progress.frames == 30 + 24, "segment 0 of one.mp4 was not rendered again"
    assert not stale_out.exists() and not any(".partial-" in f for f in _files(out))
    assert probe(out / "one.blur.mp4").frame_count == 50 and probe(out / "one.mask.mp4").frame_count == 50


def test_status_lost_config_changed_and_foreign_files(archive, tmp_path):
    out = tmp_path / "out"
    man = load_manifest(archive / "manifest.csv", out_dir=out)
    run_archive_in_process(man, CFG, out)
    # killed after publishing but before the status table was written: the audit
    # records beside the outputs prove they are current
    (out / STATUS_FILE).unlink()
    again = run_archive_in_process(man, CFG, out)
    assert again.states["one"] == "skipped" and again.progress.frames == 0
    assert sorted(StatusTable.load(out / STATUS_FILE).rows) == [("broken", ""), ("one", "blur"), ("one", "mask"), ("ward__two", "pixelate")]
    # killed between publishing a new audit record and renaming the new video: the record
    # names the file it describes (sha256), so an older video beside it is not "done"
    (out / STATUS_FILE).unlink()
    rec = json.loads(audit_path(out / "one.blur.mp4").read_text())
    assert len(rec["output"]["sha256"]) == 64
    good = (out / "one.blur.mp4").read_bytes()
    (out / "one.blur.mp4").write_bytes(good[:-1000])
    redo = run_archive_in_process(man, CFG, out)
    assert redo.states["one"] == "done" and redo.progress.frames == 50
    assert json.loads(audit_path(out / "one.blur.mp4").read_text())["output"]["sha256"] == sha256_file(out / "one.blur.mp4")
    assert probe(out / "one.blur.mp4").frame_count == 50
    # a blur setting changed: blur outputs are redone (replaced), mask and pixelate kept
    mask_before = (out / "one.mask.mp4").stat().st_mtime_ns
    cfg2 = CFG.replace("anonymize.blur.strength=0.5")
    third = run_archive_in_process(man, cfg2, out)
    assert third.states == {"one": "done", "ward__two": "skipped", "broken": "failed"}
    assert third.progress.frames == 50
    assert (out / "one.mask.mp4").stat().st_mtime_ns == mask_before
    rows = StatusTable.load(out / STATUS_FILE)
    assert rows.get("one", "blur")["config_hash"] != rows.get("one", "mask")["config_hash"]
    assert json.loads(audit_path(out / "one.blur.mp4").read_text())["config"]["anonymize"]["blur"]["strength"] == 0.5
    # a file the job did not write is never replaced without --overwrite
    (out / "ward" / "two.mask.mp4").write_bytes(b"someone else's file")
    with open(archive / "m2.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["video", "methods"], ["ward/two.mp4", "mask"], ["one.mp4", "blur"]])
    fourth = run_archive_in_process(load_manifest(archive / "m2.csv", out_dir=out), cfg2, out)
    assert fourth.states == {"ward__two": "failed", "one": "skipped"}
    err = StatusTable.load(out / STATUS_FILE).get("ward__two", "")["error"]
    assert "was not written by a deid archive run" in err and (out / "ward" / "two.mask.mp4").read_bytes() == b"someone else's file"


def test_one_job_per_output_folder_and_a_complete_run_sweeps_killed_runs_leftovers(archive, tmp_path):
    from deid.errors import ConfigError

    out = tmp_path / "out"
    man = load_manifest(archive / "manifest.csv", out_dir=out)
    first = ArchiveRun(man, CFG, out)
    first.begin()
    with pytest.raises(ConfigError, match="one job per output folder"):
        ArchiveRun(man, CFG, out).begin()
    first.finish()  # nothing ran: not complete, nothing swept, lock released
    # a killed run's leftovers: segments of an older configuration, and a patient's swap
    # model (face crops) that a SIGKILL kept from being deleted
    work = default_work_root(out)
    stale_seg = work / "one-0123456789ab-oldkey" / "seg-00000.blur.mp4"
    stale_seg.parent.mkdir(parents=True)
    stale_seg.write_bytes(b"old segment")
    crops = work / "swap" / "models" / swap_model_name("p1", "0123456789ab", swap_name_key(work / "swap")) / "faces" / "patient.npz"
    legacy = work / "swap" / "models" / "swap-p1-0123456789ab"  # named by an older deid after the id itself
    legacy.mkdir(parents=True)
    crops.parent.mkdir(parents=True)
    crops.write_bytes(b"biometric")
    # interrupted (not every video reached an end state): the leftovers stay for the rerun
    half = ArchiveRun(man, CFG, out)
    half.begin()
    half.finish()
    assert stale_seg.exists() and crops.exists() and legacy.exists()
    run = run_archive_in_process(man, CFG, out)
    assert run.complete and run.states["one"] == "done"
    assert not work.exists(), "a complete run deletes every private leftover, the lock included"
    # an explicit swap storage elsewhere: models of this manifest's patients are swept
    store = tmp_path / "store"
    secret = swap_name_key(store)
    other = store / "models" / swap_model_name("someone-else", "0123456789ab", secret)
    mine = store / "ray_train" / swap_model_name("p1", "0123456789ab", secret)
    assert "p1" not in mine.name  # patient ids are often record numbers: not in folder names
    assert stat.S_IMODE((store / ".name-key").stat().st_mode) == 0o600 and len(secret) == 32
    assert swap_model_name("p1", "k", secret) != swap_model_name("p1", "k", b"another key")  # keyed: no dictionary attack
    for d in (other, mine):
        d.mkdir(parents=True)
    run_archive_in_process(man, CFG.replace(f"ray.storage_path={store}"), out)
    assert other.exists() and not mine.exists()


@pytest.mark.media
def test_keep_partial_through_segments_matches_a_whole_video_run(tmp_path):
    from conftest import media_path

    src = media_path("video/bad/corrupted.mp4")  # decodes to frame 27 of 50
    root = tmp_path / "arch"
    root.mkdir()
    (root / "corrupted.mp4").write_bytes(src.read_bytes())
    cfg = CFG.replace("io.on_corrupt=keep_partial")  # segments of 20: the third lies wholly after the damage
    out = tmp_path / "out"
    run = run_archive_in_process(load_manifest(root, out_dir=out), cfg, out)
    assert run.states == {"corrupted": "partial"}
    whole = process_video(root / "corrupted.mp4", tmp_path / "whole", ["blur"], cfg, components=fake_components(cfg, ["blur"], pose=None))
    assert whole.status == "partial"
    a, b = out / "corrupted.blur.mp4", tmp_path / "whole" / "corrupted.blur.mp4"
    assert probe(a).frame_count == probe(b).frame_count == 28
    assert list(scan_stream(a).pts) == list(scan_stream(b).pts)
    assert json.loads(audit_path(a).read_text())["status"] == "partial"


def test_pseudonymous_names_in_an_archive(archive, tmp_path):
    """io.output_names=pseudonym: every output in the output folder itself, named after its
    input's sha256 (planned from the bytes); the audit records name neither the input
    nor the archive's folders, and the status table (which does) is kept beside the
    output folder, in <out>.records (private); a second row with the same bytes is
    skipped, not rendered into the same files; a rerun does nothing."""
    import stat

    import shutil

    # path-valued settings name the patient too, even relative and one word (`--manifest Doe_John`)
    cfg = CFG.replace("io.output_names=pseudonym", "ray.manifest=Doe_John", "ray.out_dir=Doe_John_out", "swap.workdir=Doe_John_swap",
                      "detect.model_path=Doe_John_models/face.onnx")  # a hashed path (the colour detector ignores it)
    (archive / "Doe_John").mkdir()
    shutil.copy(archive / "ward" / "two.mp4", archive / "Doe_John" / "two again.mp4")
    out = tmp_path / "out"
    man = load_manifest(archive, out_dir=out, methods=["mask"], output_names="pseudonym")
    run = run_archive_in_process(man, cfg, out)
    assert run.states["one"] == "done" and run.states["broken"] == "failed"
    assert sorted(run.states[v] for v in ("ward__two", "Doe_John__two_again")) == ["done", "skipped"]
    name = {v: sha256_file(archive / v)[:16] for v in ("one.mp4", "ward/two.mp4")}
    assert _files(out) == sorted([f"{n}.mask.{x}" for n in name.values() for x in ("mp4", "audit.json", "frames.parquet")])
    records = tmp_path / "out.records"
    assert run.records_dir == records and stat.S_IMODE(records.stat().st_mode) == 0o700
    assert len(StatusTable.load(records / STATUS_FILE)) == 3  # one, ward__two, broken (the copy, skipped, has no row)
    for p in out.rglob("*"):
        assert b"Doe" not in p.read_bytes() and b"ward" not in p.read_bytes(), p.name
    for n in name.values():
        rec = json.loads((out / f"{n}.mask.audit.json").read_text())
        assert rec["input"]["path"] is None and rec["output"]["path"] == f"{n}.mask.mp4"
        text = json.dumps(rec)
        assert str(archive) not in text and "ward" not in text and str(out) not in text
    before = _mtimes(out)
    again = run_archive_in_process(load_manifest(archive, out_dir=out, methods=["mask"], output_names="pseudonym"), cfg, out)
    assert sorted(set(again.states.values())) == ["failed", "skipped"] and _mtimes(out) == before
    # killed after publishing, before the status table was written: the audit records,
    # whose configuration has its paths left out, still prove the outputs current
    (records / STATUS_FILE).unlink()
    again = run_archive_in_process(load_manifest(archive, out_dir=out, methods=["mask"], output_names="pseudonym"), cfg, out)
    assert sorted(set(again.states.values())) == ["failed", "skipped"] and _mtimes(out) == before
    assert again.progress.frames == 0
    # ...as do older records, without the hash they were made under (their paths left out of both sides)
    (records / STATUS_FILE).unlink()
    for a in out.glob("*.audit.json"):
        rec = json.loads(a.read_text())
        assert rec.pop("method_config_hash")
        a.write_text(json.dumps(rec))
    before = _mtimes(out)
    again = run_archive_in_process(load_manifest(archive, out_dir=out, methods=["mask"], output_names="pseudonym"), cfg, out)
    assert again.progress.frames == 0 and _mtimes(out) == before
    # ...but not once a setting changed, a path too (another detector model) for a record with its hash
    (records / STATUS_FILE).unlink()
    other = cfg.replace("anonymize.mask.shape=box")
    redo = run_archive_in_process(load_manifest(archive, out_dir=out, methods=["mask"], output_names="pseudonym"), other, out)
    assert redo.states["one"] == "done" and redo.progress.frames > 0
    (records / STATUS_FILE).unlink()
    other = other.replace("detect.model_path=Doe_John_models/another.onnx")
    redo = run_archive_in_process(load_manifest(archive, out_dir=out, methods=["mask"], output_names="pseudonym"), other, out)
    assert redo.states["one"] == "done" and redo.progress.frames > 0
    (records / STATUS_FILE).unlink()
    run_archive_in_process(load_manifest(archive, out_dir=out, methods=["mask"], output_names="pseudonym"), cfg, out)
    before = _mtimes(out)
    # the copy asks for a method the first row did not: it renders that one only
    with open(archive / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["video", "methods"], ["ward/two.mp4", "mask"], ["Doe_John/two again.mp4", "mask,blur"]])
    third = run_archive_in_process(load_manifest(archive / "m.csv", out_dir=out, output_names="pseudonym"), cfg, out)
    assert third.states == {"ward__two": "skipped", "Doe_John__two_again": "done"}
    n = name["ward/two.mp4"]
    assert (out / f"{n}.blur.mp4").is_file() and _mtimes(out)[out / f"{n}.mask.mp4"] == before[out / f"{n}.mask.mp4"]


def test_a_rows_own_fixed_regions(tmp_path):
    """Manifest column fixed_regions: that row's outputs get its boxes filled (on top of
    anonymize.fixed_regions), the others do not; a bad cell fails its row only; changing
    a row's boxes redoes that row alone."""
    import numpy as np

    from deid.io import read_frames

    root = tmp_path / "archive"
    root.mkdir()
    for n in ("scope", "phone"):
        make_synthetic_video(root / f"{n}.mp4", n_frames=24)
    (root / "bad.mp4").write_bytes((root / "phone.mp4").read_bytes())

    def manifest(scope_regions):
        with open(root / "m.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([["video", "methods", "fixed_regions"], ["scope.mp4", "mask", scope_regions],
                                      ["phone.mp4", "mask", ""], ["bad.mp4", "mask", "[[0, 0, 2, 1]]"]])
        return load_manifest(root / "m.csv", out_dir=out)

    out = tmp_path / "out"
    cfg = CFG.replace("anonymize.fixed_color=[255, 0, 255]", "anonymize.fixed_regions=[[0.9, 0.9, 1, 1]]")
    run = run_archive_in_process(manifest("[[0, 0, 0.5, 0.25]]"), cfg, out)
    assert run.states == {"scope": "done", "phone": "done", "bad": "failed"}
    assert "fixed_regions" in run.status.get("bad", "")["error"]
    scope, phone = (read_frames(out / f"{n}.mask.mp4", range(24)) for n in ("scope", "phone"))
    for f, g in zip(scope, phone):
        assert np.abs(f[2:28, 2:78].reshape(-1, 3).mean(0) - (255, 0, 255)).max() < 12  # the row's box
        assert np.abs(g[2:28, 2:78].reshape(-1, 3).mean(0) - (255, 0, 255)).max() > 60  # not the other row's
        for h in (f, g):  # the configuration's box, on both
            assert np.abs(h[110:, 146:].reshape(-1, 3).mean(0) - (255, 0, 255)).max() < 20
    rec = json.loads((out / "scope.mask.audit.json").read_text())
    assert rec["config"]["anonymize"]["fixed_regions"] == [[0.9, 0.9, 1.0, 1.0], [0.0, 0.0, 0.5, 0.25]]
    before = _mtimes(out)
    again = run_archive_in_process(manifest("[[0, 0, 0.5, 0.25]]"), cfg, out)
    assert again.states["scope"] == again.states["phone"] == "skipped"
    third = run_archive_in_process(manifest("[[0, 0, 0.6, 0.25]]"), cfg, out)
    assert third.states["scope"] == "done" and third.states["phone"] == "skipped"
    after = _mtimes(out)
    assert after[out / "phone.mask.mp4"] == before[out / "phone.mask.mp4"]
    assert after[out / "scope.mask.mp4"] != before[out / "scope.mask.mp4"]


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(archive, tmp_path, monkeypatch):
    """A read-only mount (root ignores permission bits, so the refusal is simulated):
    said at the start, not after the first video has rendered."""
    import errno
    import tempfile

    from deid.errors import OutputWriteError

    out = tmp_path / "out"
    out.mkdir()
    real = tempfile.mkstemp

    def read_only(*a, dir=None, **k):
        if dir is not None and Path(dir) == out:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    run = ArchiveRun(load_manifest(archive / "manifest.csv", out_dir=out), CFG, out)
    with pytest.raises(OutputWriteError, match=f"cannot write to {out}: Read-only file system"):
        run.begin()
    assert list(out.iterdir()) == [] and not default_work_root(out).exists()
    monkeypatch.undo()  # writable again: the refused run left no lock behind
    again = ArchiveRun(load_manifest(archive / "manifest.csv", out_dir=out), CFG, out)
    again.begin()
    again.finish()


@pytest.mark.media
def test_a_corrupt_video_that_fails_says_how_many_frames_were_read(tmp_path):
    """The status row of a video whose stream breaks part-way said frames_read 0 beside an
    error naming frame 27 as the last good one."""
    from conftest import media_path

    from deid.archive import STATUS_FILE, StatusTable

    root = tmp_path / "arch"
    root.mkdir()
    (root / "corrupted.mp4").write_bytes(media_path("video/bad/corrupted.mp4").read_bytes())
    out = tmp_path / "out"
    run = run_archive_in_process(load_manifest(root, out_dir=out), CFG, out)
    assert run.states == {"corrupted": "failed"}
    rows = [r for (v, _), r in StatusTable.load(out / STATUS_FILE).rows.items() if v == "corrupted"]
    assert rows and all(r["frames_read"] == 28 and "last good frame is 27" in r["error"] for r in rows)
