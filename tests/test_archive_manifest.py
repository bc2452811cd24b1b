"""Archive manifests (deid.archive.load_manifest): one clear error per bad row, the rest run."""

import csv
import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deid.archive import load_manifest, parse_methods
from deid.errors import ConfigError


def _touch(p, data=b"x"):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture()
def archive(tmp_path):
    root = tmp_path / "archive"
    for rel in ("a.mp4", "b.mp4", "clip.mp4", "clip.mov", "sub/a.mp4", "sub/c.mp4"):
        _touch(root / rel)
    (root / "folder.mp4").mkdir()
    _touch(tmp_path / "outside.mp4")
    return root


def test_bad_rows_get_one_error_each_and_good_rows_survive(archive, tmp_path):
    m = _csv(
        archive / "manifest.csv",
        ["video", "patient_id", "donor", "methods", "notes"],
        [
            ["a.mp4", "p1", "", "blur,mask", "fine"],  # 1 ok
            ["../outside.mp4", "p2", "", "", ""],  # 2 escapes the root
            ["missing.mp4", "p3", "", "", ""],  # 3 no such file
            ["a.mp4", "p1", "", "", ""],  # 4 same video as row 1
            ["clip.mp4", "", "", "blur", ""],  # 5 ok
            ["clip.mov", "", "", "blur", ""],  # 6 ok: same stem as row 5, so both get hashed output names
            ["b.mp4", "", "", "smudge", ""],  # 7 unknown method
            ["b.mp4", "", "", "swap", ""],  # 8 swap without a donor
            ["sub/a.mp4", "", "", "", ""],  # 9 ok: same stem, other folder
            ["", "", "", "", ""],  # 10 empty video
            ["folder.mp4", "", "", "", ""],  # 11 a directory
            ["sub/c.mp4", "p9", "donor-x", "swap|blur", ""],  # 12 ok
        ],
    )
    man = load_manifest(m, methods=["pixelate"])
    assert [e.row for e in man.entries] == [1, 5, 6, 9, 12]
    errs = {e.row: e.error for e in man.errors}
    assert sorted(errs) == [2, 3, 4, 7, 8, 10, 11]
    assert "escapes the archive root" in errs[2]
    assert "no such file" in errs[3]
    assert "same video as row 1" in errs[4]
    assert "unknown method 'smudge'" in errs[7]
    assert "needs a consenting donor" in errs[8]
    assert "empty" in errs[10]
    assert "not a file" in errs[11]
    for row, msg in errs.items():
        assert f"row {row} " in msg, "every message names its row"
    a, clip, clip_mov, sub_a, c = man.entries
    assert a.methods == ("blur", "mask") and a.patient == "p1"
    assert clip.methods == ("blur",) and clip_mov.methods == ("blur",)
    # clip.mp4 and clip.mov share a folder and a stem: each output name carries a hash of
    # its video's path (whatever the rows' order), so neither has to be renamed
    h = {e.video: hashlib.sha256(e.video.encode()).hexdigest()[:8] for e in (clip, clip_mov)}
    assert clip.output_paths(tmp_path / "out")["blur"] == tmp_path / "out" / f"clip-{h[clip.video]}.blur.mp4"
    assert clip_mov.output_paths(tmp_path / "out")["blur"] == tmp_path / "out" / f"clip-{h[clip_mov.video]}.blur.mp4"
    assert clip.video_id != clip_mov.video_id and a.name == "" and a.output_paths(tmp_path)["mask"] == tmp_path / "a.mask.mp4"
    swapped = load_manifest(_csv(archive / "m2.csv", ["video"], [["clip.mov"], ["clip.mp4"]]), methods=["blur"])
    assert {e.video: e.output_paths(tmp_path)["blur"] for e in swapped.entries} == {
        e.video: e.output_paths(tmp_path)["blur"] for e in (clip, clip_mov)}
    assert sub_a.methods == ("pixelate",), "rows without methods take the default"
    assert sub_a.rel_dir == "sub" and sub_a.video_id == "sub__a" and a.video_id == "a"
    assert c.methods == ("swap", "blur") and c.donor == "donor-x" and c.patient == "p9"
    assert sub_a.patient == "sub__a", "patient defaults to the video id"
    # outputs mirror the archive's folders, so same stems in two folders do not collide
    outs = sub_a.output_paths(tmp_path / "out")
    assert outs["pixelate"] == tmp_path / "out" / "sub" / "a.pixelate.mp4"
    # a bad row's id never names a good row's video (its failed row would replace the good rows)
    ids = [e.video_id for e in man.entries] + [e.video_id for e in man.errors]
    assert len(ids) == len(set(ids))
    # a bad row is kept under the id it gets once fixed, so the fix replaces its failure
    bad = load_manifest(_csv(archive / "m3.csv", ["video", "methods"], [["sub/c.mp4", "smudge"], ["sub/gone.mp4", ""]]))
    fixed = load_manifest(_csv(archive / "m4.csv", ["video", "methods"], [["sub/c.mp4", "blur"]]))
    assert [e.video_id for e in bad.errors] == ["sub__c", "sub__gone"] and fixed.entries[0].video_id == "sub__c"


def test_parquet_manifest_with_aliases_and_explicit_root(archive, tmp_path):
    t = pa.table({"path": [str(archive / "a.mp4"), str(tmp_path / "outside.mp4"), "b.mp4"],
                  "patient": ["p1", "p2", None], "method": ["mask", None, "blur"], "id": ["case-001", None, None]})
    pq.write_table(t, tmp_path / "m.parquet")
    # no explicit root: relative paths start at the manifest's folder; absolute paths are allowed
    man = load_manifest(tmp_path / "m.parquet", methods=["blur"])
    assert [e.video_id for e in man.entries] == ["case-001", "outside"]
    assert man.entries[1].rel_dir == "" and man.entries[0].methods == ("mask",)
    assert [e.row for e in man.errors] == [3]  # b.mp4 is not beside the manifest
    # an explicit root confines every row, absolute paths included
    man = load_manifest(tmp_path / "m.parquet", root=archive)
    assert [e.video_id for e in man.entries] == ["case-001", "b"]
    assert [e.row for e in man.errors] == [2] and "escapes the archive root" in man.errors[0].error


def test_folder_scan_skips_outputs_and_validates_ids(archive, tmp_path):
    out = archive / "out"
    _touch(out / "a.blur.mp4")
    man = load_manifest(archive, out_dir=out, methods=["mask"])
    names = sorted(e.video_id for e in man.entries)
    h_mp4 = hashlib.sha256(str(archive / "clip.mp4").encode()).hexdigest()[:8]
    assert names == ["a", "b", "clip", f"clip-{h_mp4}", "sub__a", "sub__c"]
    assert not man.errors  # clip.mp4 and clip.mov: hashed output names, both kept
    assert sorted(e.output_paths(out)["mask"].name for e in man.entries if e.video_id.startswith("clip")) == sorted(
        f"clip-{hashlib.sha256(str(archive / n).encode()).hexdigest()[:8]}.mask.mp4" for n in ("clip.mp4", "clip.mov"))
    # a file named like another's hashed output: the later one is refused, with the fix
    h = hashlib.sha256(str(archive / "clip.mov").encode()).hexdigest()[:8]
    _touch(archive / f"clip-{h}.mp4")
    man = load_manifest(archive, out_dir=out, methods=["mask"])
    assert len(man.errors) == 1 and f"same output clip-{h}.mask.mp4" in man.errors[0].error
    (archive / f"clip-{h}.mp4").unlink()
    # names that derive the same id get distinct ones; the work folder beside an output
    # folder inside the archive is never scanned; an output folder holding the archive is refused
    _touch(archive / "x y.mp4")
    _touch(archive / "x_y.mp4")
    _touch(archive / ".out.deid-work" / "v-1" / "seg-00000.blur.mp4")
    man = load_manifest(archive, out_dir=out, methods=["mask"])
    ids = sorted(e.video_id for e in man.entries if e.video_id.startswith("x_y"))
    assert len(ids) == 2 and ids[0] == "x_y" and ids[1].startswith("x_y-"), ids
    assert not any("deid-work" in e.video for e in man.entries)
    for bad_out in (archive, tmp_path):
        with pytest.raises(ConfigError, match="contains it"):
            load_manifest(archive, out_dir=bad_out)
    # an earlier run's outputs (their audit records beside them) in another folder under the archive
    _touch(archive / "deid_old" / "a.blur.mp4")
    (archive / "deid_old" / "a.blur.audit.json").write_text(json.dumps({"deid_version": "0.1.0", "output": {"sha256": "x"}}))
    _touch(archive / "deid_old" / "notes.mp4")  # no record: an input
    man = load_manifest(archive, out_dir=out, methods=["mask"])
    assert "deid_old__notes" in {e.video_id for e in man.entries}
    assert not any("a.blur" in e.video for e in man.entries)
    m = _csv(tmp_path / "ids.csv", ["video", "video_id"], [[str(archive / "a.mp4"), "../evil"], [str(archive / "b.mp4"), "ok-1"]])
    man = load_manifest(m)
    assert [e.video_id for e in man.entries] == ["ok-1"] and "video_id '../evil'" in man.errors[0].error


def test_unusable_manifests_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_manifest(tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="no video column"):
        load_manifest(_csv(tmp_path / "m.csv", ["file_name", "patient"], [["a.mp4", "p"]]))
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(ConfigError, match="csv"):
        load_manifest(tmp_path / "m.json")
    assert len(load_manifest(_csv(tmp_path / "empty.csv", ["video"], []))) == 0


def test_parse_methods():
    assert parse_methods("blur, mask;blur", ()) == ("blur", "mask")
    assert parse_methods("", ("pixelate",)) == ("pixelate",)
    assert parse_methods(["SWAP", "mask"]) == ("swap", "mask")
    # repeated CLI flags, each comma-separated (deid anonymize -m blur,mask -m pixelate)
    assert parse_methods(["blur,mask", "pixelate", "mask"]) == ("blur", "mask", "pixelate")
    assert parse_methods(["", " "], ("blur",)) == ("blur",)
    with pytest.raises(ConfigError, match="unknown method"):
        parse_methods("blurr")
