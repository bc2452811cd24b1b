"""deid.records: where what names the inputs (status, metrics, report) is kept."""

import shutil

import pytest

from deid.archive import STATUS_FILE, load_manifest, run_archive_in_process
from deid.config import Config
from deid.errors import ConfigError
from deid.records import check_outside_outputs, records_folder
from deid.testing import make_synthetic_video

CFG = Config().replace("detect.backend=color", "track.pose_fallback=false", "audit.identity_backend=patch", "audit.sample_frames=4",
                       "io.chunk_size=8", "ray.segment_frames=0")


def test_records_folder_defaults_and_refusals(tmp_path):
    out = tmp_path / "out"
    assert records_folder(out, "input") == out
    assert records_folder(out, "pseudonym") == tmp_path / "out.records"
    assert records_folder(out, "pseudonym", tmp_path / "keys") == tmp_path / "keys"
    assert records_folder(out, "input", out / "keys") == out / "keys"  # the outputs name the inputs anyway
    for inside in (out, out / "keys", out / "a" / ".." / "b"):
        with pytest.raises(ConfigError, match="lies inside the output folder"):
            records_folder(out, "pseudonym", inside)
    check_outside_outputs(out / "report.html", out, "input", "the report")
    with pytest.raises(ConfigError, match="^the report .* lies inside"):
        check_outside_outputs(out / "report.html", out, "pseudonym", "the report")
    check_outside_outputs(tmp_path / "out2" / "report.html", out, "pseudonym", "the report")  # a sibling, not inside
    assert not out.exists()


def test_an_old_status_table_in_a_pseudonymous_output_folder_is_named(tmp_path, caplog):
    """A status table an earlier version left in <out> under io.output_names=pseudonym
    names the inputs: the run keeps its own in <out>.records, says so, and still
    recognises the published outputs from their audit records."""
    root = tmp_path / "Doe_John"
    root.mkdir()
    make_synthetic_video(root / "visit.mp4", n_frames=12)
    cfg = CFG.replace("io.output_names=pseudonym")
    out = tmp_path / "out"
    run = run_archive_in_process(load_manifest(root, out_dir=out, methods=["mask"], output_names="pseudonym"), cfg, out)
    assert run.states == {"visit": "done"} and not (out / STATUS_FILE).exists()
    shutil.move(tmp_path / "out.records" / STATUS_FILE, out / STATUS_FILE)  # as an older version wrote it
    again = run_archive_in_process(load_manifest(root, out_dir=out, methods=["mask"], output_names="pseudonym"), cfg, out)
    assert again.states == {"visit": "skipped"}
    said = [r.getMessage() for r in caplog.records]
    assert any("an earlier run's status table" in s and str(out / STATUS_FILE) in s for s in said), said
    assert (tmp_path / "out.records" / STATUS_FILE).is_file()
