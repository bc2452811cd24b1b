"""deid verify on folders a QA pass built to fool it: audit records of the wrong shape,
raw media under other names."""

import json

import numpy as np
import pytest

from deid.verify import verify_folder
from test_verify import release


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Two outputs (blur, mask) with their records, as `deid anonymize` leaves them."""
    return release(tmp_path_factory.mktemp("qa_verify"), "clip.mp4", n_frames=8)


@pytest.fixture()
def folder(released, tmp_path):
    out, src = released
    dst = tmp_path / "share"
    dst.mkdir()
    for p in out.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst, src


def _edit_record(folder, method, edit):
    a = next(folder.glob(f"*.{method}.audit.json"))
    rec = json.loads(a.read_text())
    edit(rec)
    a.write_text(json.dumps(rec))
    return a


@pytest.mark.parametrize(
    "edit, why",
    [
        (lambda r: r.update(output="x"), "output is str 'x', not an object"),
        (lambda r: r.update(counts=[1]), "counts is list [1], not an object"),
        (lambda r: r.update(leak_audit=[1]), "leak_audit is list [1], not an object"),
        (lambda r: r["counts"].update(frames_fail_closed="many"), "counts.frames_fail_closed is 'many', not a count"),
        (lambda r: r.update(config="x"), "config is str 'x', not an object"),
        (lambda r: r["config"].update(io=3), "config.io is int 3, not an object"),
        (lambda r: r["leak_audit"].update(leaks="2"), "leak_audit.leaks is '2', not a count"),
        (lambda r: r["output"].update(sha256=5), "output.sha256 is 5, not a string"),
    ],
)
def test_a_record_of_the_wrong_shape_is_a_finding_and_the_rest_is_still_checked(folder, edit, why):
    out, _ = folder
    a = _edit_record(out, "mask", edit)
    rep = verify_folder(out)
    assert [(f.path, f.what) for f in rep.errors] == [(a.name, f"invalid audit record ({why})")]
    assert rep.outputs == 1  # the blur output was still verified


@pytest.mark.parametrize("record", ["[1, 2]", '"done"', '{"status": 3}'])
def test_a_record_that_is_not_an_object_is_unreadable(folder, record):
    out, _ = folder
    a = next(out.glob("*.mask.audit.json"))
    a.write_text(record)
    rep = verify_folder(out)
    assert [f.path for f in rep.errors] == [a.name] and rep.errors[0].what.startswith("unreadable audit record")
    assert rep.outputs == 1


def test_a_record_without_a_status_says_so(folder):
    out, _ = folder
    _edit_record(out, "mask", lambda r: r.pop("status"))
    mask = next(out.glob("*.mask.mp4"))
    assert [(f.path, f.what) for f in verify_folder(out).errors] == [
        (mask.name, "its audit record has no status: nothing says deid finished it")]


@pytest.mark.parametrize("name", ["talking.bin", "talking", "talking.mkv.partial", "face.jpg", "face", "face.png.txt"])
def test_raw_media_under_any_name_is_an_error(folder, name):
    import cv2

    out, src = folder
    if name.startswith("face"):
        ok, buf = cv2.imencode(".jpg" if "png" not in name else ".png", np.full((48, 64, 3), 128, np.uint8))
        (out / name).write_bytes(buf.tobytes())
        want = "an image ("
    else:
        (out / name).write_bytes(src.read_bytes())
        want = "a video ("
    rep = verify_folder(out)
    assert [f.path for f in rep.errors] == [name]
    assert rep.errors[0].what.startswith(f"raw media, not a deid output: it holds {want}")


def test_a_symbolic_link_to_a_folder_is_an_error(folder, tmp_path):
    out, src = folder
    (tmp_path / "patients").mkdir()
    (tmp_path / "patients" / "p1.mp4").write_bytes(src.read_bytes())
    (out / "patients").symlink_to(tmp_path / "patients", target_is_directory=True)
    rep = verify_folder(out)
    assert [f.path for f in rep.errors] == ["patients"] and "a symbolic link to a folder" in rep.errors[0].what
    assert not rep.ok


def test_files_that_are_not_media_stay_warnings_and_an_archive_says_it_was_not_inspected(folder):
    import zipfile

    out, src = folder
    (out / "notes.txt").write_text("hello\n")
    (out / "table.csv").write_text("a,b\n1,2\n")
    (out / "extra.json").write_text('{"a": 1}')
    (out / "art.ans").write_bytes(b"\x1b[31mred\x1b[0m text\n")  # FFmpeg "decodes" ANSI art as video
    (out / "empty.dat").write_bytes(b"")
    with zipfile.ZipFile(out / "pack.zip", "w") as z:
        z.write(src, "t.mp4")
    rep = verify_folder(out)
    assert rep.ok, rep.errors
    whats = {f.path: f.what for f in rep.warnings}
    assert whats["pack.zip"].startswith("an archive: what it holds was not inspected")
    for n in ("notes.txt", "table.csv", "extra.json", "art.ans", "empty.dat"):
        assert whats[n] == "not written by deid: check it before sharing"


def test_outputs_and_their_records_are_not_probed_again(folder, monkeypatch):
    import deid.verify as v

    out, _ = folder
    (out / "notes.txt").write_text("hello\n")
    probed = []
    monkeypatch.setattr(v, "_media", lambda p: probed.append(p.name))
    assert verify_folder(out).ok
    assert probed == ["notes.txt"]


def test_an_audio_recording_is_raw_media_too(tmp_path):
    """A voice recording (audio only) in the folder to share: an error, not a warning."""
    import av
    import numpy as np

    from deid.verify import _media

    p = tmp_path / "ward_round.m4a"
    with av.open(str(p), "w") as c:
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        for i in range(20):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 16000, i * 1024
            for pkt in a.encode(f):
                c.mux(pkt)
        for pkt in a.encode():
            c.mux(pkt)
    assert "audio recording" in (_media(p) or "")
    (tmp_path / "notes.txt").write_text("ward round notes\n")
    assert _media(tmp_path / "notes.txt") is None
