"""Archive runs never harm what is not theirs: a work folder (``ray.work_dir``) over the
archive or the outputs is refused, a shared one keeps its files; and the settings that
used to fail every segmented video (``track.fail_closed=drop`` emptying a segment,
``io.container=mkv``) match a whole-video run."""

import csv
import os
import stat

import av
import pytest

from deid.archive import (
    STATUS_FILE,
    WORK_MARK,
    ArchiveRun,
    StatusTable,
    default_work_root,
    finished_segment,
    load_manifest,
    plan_video,
    render_planned_segment,
    run_archive_in_process,
    segment_file,
    work_folder,
)
from deid.errors import ConfigError
from deid.io import probe, scan_stream
from deid.pipeline import process_video
from deid.testing import ColorPresence, fake_components, make_synthetic_video
from test_archive_run import CFG  # the archive tests' one configuration


@pytest.fixture()
def archive(tmp_path):
    root = tmp_path / "archive"
    (root / "ward").mkdir(parents=True)
    make_synthetic_video(root / "one.mp4", n_frames=30)
    make_synthetic_video(root / "ward" / "two.mp4", n_frames=10)
    with open(root / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["video"], ["one.mp4"], ["ward/two.mp4"]])
    return root


def _tree(d):
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}


def _mode(p):
    return stat.S_IMODE(p.stat().st_mode)


def test_a_shared_scratch_work_dir_keeps_its_files_and_its_mode(archive, tmp_path):
    scratch = tmp_path / "scratch"
    (scratch / "colleague").mkdir(parents=True)
    (scratch / "colleague" / "results.csv").write_text("important")
    (scratch / "notes.txt").write_text("important")
    (scratch / "v-0123456789ab-0123456789").mkdir()  # looks like deid's, is not in deid's folder
    os.chmod(scratch, 0o2775)
    before = _tree(scratch)
    out = tmp_path / "out"
    man = load_manifest(archive / "manifest.csv", out_dir=out, exclude=[scratch])
    run = ArchiveRun(man, CFG, out, work_root=scratch)
    assert run.work_root.parent == scratch and run.work_root.name.startswith("deid-out-")
    run.begin()
    assert _mode(scratch) == 0o2775, "a folder deid did not create is never chmodded"
    assert _mode(run.work_root) == 0o700 and (run.work_root / WORK_MARK).is_file()
    run.finish()  # interrupted: nothing swept, the empty private folder removed
    assert not run.work_root.exists() and _tree(scratch) == before
    # a complete run: its own sub-folder is swept and removed, the colleague's files stay
    done = run_archive_in_process(man, CFG, out, work_root=scratch)
    assert done.complete and done.states == {"one": "done", "ward__two": "done"}
    assert _tree(scratch) == before and _mode(scratch) == 0o2775


def test_a_work_dir_over_the_archive_or_the_outputs_is_refused_and_the_inputs_survive(archive, tmp_path):
    out = tmp_path / "out"
    before = _tree(archive)
    man = load_manifest(archive / "manifest.csv", out_dir=out, exclude=[archive])
    for bad, why in [
        (archive, "is the archive root"),
        (archive / "ward", "lies inside the archive root"),
        (tmp_path, "contains the archive root"),  # holds the archive and the outputs
        (out, "output folder"),
        (tmp_path / "elsewhere" / ".." / "archive", "is the archive root"),
    ]:
        with pytest.raises(ConfigError, match=why):
            run_archive_in_process(man, CFG, out, work_root=bad)
    assert _tree(archive) == before, "nothing of the archive was touched"
    assert not out.exists() and not (archive / STATUS_FILE).exists(), "refused before any work"
    # a shared parent that holds the output folder is fine: deid works in its own sub-folder
    scratch = tmp_path / "scratch"
    res = run_archive_in_process(load_manifest(archive / "manifest.csv", out_dir=scratch / "results"), CFG,
                                 scratch / "results", work_root=scratch)
    assert res.states == {"one": "done", "ward__two": "done"}
    assert sorted(p.name for p in scratch.iterdir()) == ["results"]  # deid's sub-folder swept, nothing else touched
    # a manifest row with an absolute path outside the archive root: that folder is an input folder too
    other = tmp_path / "other"
    other.mkdir()
    make_synthetic_video(other / "three.mp4", n_frames=5)
    with open(archive / "m2.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["video"], ["one.mp4"], [str(other / "three.mp4")]])
    man2 = load_manifest(archive / "m2.csv", out_dir=out)
    with pytest.raises(ConfigError, match="contains the input video"):
        ArchiveRun(man2, CFG, out, work_root=other)
    assert (other / "three.mp4").is_file()
    # outputs inside the archive with the default work folder beside them still run
    inner = archive / "deid_out"
    ok = run_archive_in_process(load_manifest(archive / "manifest.csv", out_dir=inner), CFG, inner)
    assert ok.states == {"one": "done", "ward__two": "done"} and not default_work_root(inner).exists()
    assert all(_tree(archive)[k] == v for k, v in before.items())


def test_the_default_work_folder_is_marked_and_only_deid_s_entries_are_swept(archive, tmp_path):
    out = tmp_path / "out"
    man = load_manifest(archive / "manifest.csv", out_dir=out)
    work = default_work_root(out)
    assert work_folder(out) == work == work_folder(out, work)
    first = ArchiveRun(man, CFG, out)
    first.begin()
    assert (work / WORK_MARK).is_file() and _mode(work) == 0o700
    first.finish()
    assert not work.exists(), "an empty work folder goes, marker and all"
    stale = work / "one-0123456789ab-0123456789" / "seg-00000.blur.mp4"
    stale.parent.mkdir(parents=True)  # a killed older run's folder (unmarked): deid's own name, taken over
    stale.write_bytes(b"old segment")
    stranger = work / "notes.txt"
    stranger.write_text("not deid's")
    run = run_archive_in_process(man, CFG, out)
    assert run.complete and not stale.parent.exists()
    assert stranger.read_text() == "not deid's" and (work / WORK_MARK).is_file(), "when in doubt, leave it"
    stranger.unlink()
    run_archive_in_process(man, CFG, out)
    assert not work.exists()


def test_two_output_folders_can_share_a_work_dir(archive, tmp_path):
    work = tmp_path / "work"
    man_a = load_manifest(archive / "manifest.csv", out_dir=tmp_path / "out_a")
    man_b = load_manifest(archive / "manifest.csv", out_dir=tmp_path / "out_b")
    a = ArchiveRun(man_a, CFG, tmp_path / "out_a", work_root=work)
    b = ArchiveRun(man_b, CFG, tmp_path / "out_b", work_root=work)
    assert a.work_root != b.work_root and a.work_root.parent == b.work_root.parent == work
    a.begin()
    b.begin()  # not refused: each job locks its own sub-folder
    with pytest.raises(ConfigError, match="one job per output folder"):
        ArchiveRun(man_a, CFG, tmp_path / "out_a", work_root=work).begin()
    a.finish()
    b.finish()
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("timing", ["keep", "cfr"])
def test_fail_closed_drop_with_a_segment_whose_every_frame_is_dropped(tmp_path, timing):
    root = tmp_path / "arch"
    root.mkdir()
    make_synthetic_video(root / "v.mp4", n_frames=60, hidden=list(range(18, 44)))  # frames 20..39 are one segment
    cfg = CFG.replace("track.max_gap=2", "track.hold_frames=2", "track.lookahead=8", "ray.segment_overlap=8",
                      "track.fail_closed=drop", f"io.timing={timing}")
    comp = fake_components(cfg, ["blur"], pose=None, presence=ColorPresence())
    out = tmp_path / "out"
    man = load_manifest(root, out_dir=out)
    # regular timestamps count the frames kept before: with cfr the video is one segment
    assert len(plan_video(man.entries[0], cfg, out, tmp_path / "w", StatusTable()).segments) == (3 if timing == "keep" else 1)
    run = run_archive_in_process(man, cfg, out, components=comp)
    assert run.states == {"v": "done"}, run.summary()["failed"]
    whole = process_video(root / "v.mp4", tmp_path / "whole", ["blur"], cfg, components=comp)
    assert whole.status == "done" and whole.counts["frames_fail_closed"] >= 20
    a, b = out / "v.blur.mp4", tmp_path / "whole" / "v.blur.mp4"
    assert probe(a).frame_count == probe(b).frame_count == 60 - whole.counts["frames_fail_closed"]
    assert list(scan_stream(a).pts) == list(scan_stream(b).pts)
    assert StatusTable.load(out / STATUS_FILE).get("v", "blur")["frames_written"] == probe(a).frame_count


@pytest.mark.parametrize("segment_frames", [20, 0])
def test_mkv_outputs_are_stitched_from_mp4_segments(tmp_path, segment_frames):
    root = tmp_path / "arch"
    root.mkdir()
    make_synthetic_video(root / "v.mp4", n_frames=30)
    cfg = CFG.replace("io.container=mkv", f"ray.segment_frames={segment_frames}")
    out = tmp_path / "out"
    man = load_manifest(root, out_dir=out, container="mkv")
    run = run_archive_in_process(man, cfg, out)
    assert run.states == {"v": "done"}, run.summary()["failed"]
    a = out / "v.blur.mkv"
    with av.open(str(a)) as c:
        assert "matroska" in c.format.name
    whole = process_video(root / "v.mp4", tmp_path / "whole", ["blur"], cfg, components=fake_components(cfg, ["blur"], pose=None))
    b = tmp_path / "whole" / "v.blur.mkv"
    assert whole.status == "done" and probe(a).frame_count == probe(b).frame_count == 30
    assert list(scan_stream(a).pts) == list(scan_stream(b).pts)
    if segment_frames:  # the segments themselves are MP4 files, and a killed run's are found again
        plan = plan_video(man.entries[0], cfg, tmp_path / "o2", tmp_path / "w", StatusTable())
        assert render_planned_segment(plan, 0, cfg, fake_components(cfg, ["blur"], pose=None)).ok
        assert segment_file(plan.work_dir, 0, "blur").suffix == ".mp4" and segment_file(plan.work_dir, 0, "blur").is_file()
        assert finished_segment(plan, 0, "mkv") is not None
