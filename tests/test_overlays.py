"""deid.overlays / `deid overlays`: proposing boxes of burnt-in text for anonymize.fixed_regions."""

import json
import re

import cv2
import numpy as np
import pytest

from deid.cli import main
from deid.config import Config
from deid.io import VideoWriter, read_frames
from deid.overlays import find_overlays, merge_fractions

W, H, N = 320, 240, 40
NAME = "DOE, JOHN  MRN 0012345"


def _scene(i):
    """A moving picture: a drifting gradient, a bright box crossing it and noise."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.dstack([(xx + 3 * i) % 256, (yy * 0.8 + 2 * i) % 256, np.full((H, W), 90)]).astype(np.uint8)
    x = 20 + 6 * i
    cv2.rectangle(img, (x, 80), (x + 50, 150), (230, 200, 170), -1)
    rng = np.random.default_rng(i)
    return np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)


def _video(path, text=True):
    with VideoWriter(path, W, H, 25.0, crf=18, preset="ultrafast") as w:
        for i in range(N):
            img = _scene(i)
            if text:  # a device's banner (top left) and a running clock (bottom right)
                cv2.putText(img, NAME, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
                cv2.putText(img, f"10:31:{i // 5:02d}", (220, 228), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 0), 1, cv2.LINE_AA)
            w.write(img)
    return path


def _covered(boxes, target, need=0.9):
    """Share of ``target``'s pixels (x0, y0, x1, y1) inside the union of ``boxes``."""
    m = np.zeros((H, W), bool)
    for x0, y0, x1, y1 in boxes:
        m[y0:y1, x0:x1] = True
    x0, y0, x1, y1 = target
    return m[y0:y1, x0:x1].mean() >= need


def test_a_banner_and_a_clock_are_proposed_and_nothing_else(tmp_path):
    found, frame = find_overlays(_video(tmp_path / "scope.mp4"))
    boxes = [o.box for o in found]
    assert frame.shape == (H, W, 3)
    (tw, th), _ = cv2.getTextSize(NAME, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    assert _covered(boxes, (6, 20 - th, 6 + tw, 22)), boxes  # the name, its whole width
    (cw, ch), _ = cv2.getTextSize("10:31:00", cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)
    assert _covered(boxes, (220, 228 - ch, 220 + cw, 230)), boxes  # the clock, digits changing
    assert len(found) == 2 and all(o.box[3] < 60 or o.box[1] > 190 for o in found), boxes  # not the moving scene
    for o in found:
        x0, y0, x1, y1 = o.fraction  # rounded outwards: never smaller than the pixel box
        assert x0 * W <= o.box[0] and y0 * H <= o.box[1] and x1 * W >= o.box[2] and y1 * H >= o.box[3]


def test_no_text_no_proposal(tmp_path):
    assert find_overlays(_video(tmp_path / "plain.mp4", text=False))[0] == []


@pytest.mark.parametrize("clip", ["video/flipping_a_pancake.mkv", "video/talking/talking_head_1.mp4",
                                  "video/talking/talking_head_2.mp4"])
def test_real_clips_without_text_get_no_proposal(clip):
    from conftest import media_path

    assert find_overlays(media_path(clip))[0] == []


def test_merge_fractions():
    assert merge_fractions([(0, 0, 0.3, 0.1), (0.2, 0.05, 0.5, 0.12), (0.6, 0.9, 1, 1)]) == [(0, 0, 0.5, 0.12), (0.6, 0.9, 1, 1)]
    assert merge_fractions([(0, 0, 0.1, 0.1), (0.1, 0, 0.2, 0.1)]) == [(0, 0, 0.1, 0.1), (0.1, 0, 0.2, 0.1)]  # touching only


def test_the_printed_setting_fills_the_text_in_every_output_frame(tmp_path, capsys):
    """`deid overlays` -> its --set line -> `deid anonymize`: the banner and the clock are
    gone from every frame; the picture between them is left as it was."""
    from test_cli import FAKES

    src = _video(tmp_path / "scope.mp4")
    assert main(["overlays", str(src), "--sheet", str(tmp_path / "sheets")]) == 0
    text = capsys.readouterr().out
    assert (tmp_path / "sheets" / "scope.overlays.png").is_file()
    assert (tmp_path / "sheets" / "scope.overlays.png").stat().st_mode & 0o077 == 0  # an original frame: owner only
    line = re.search(r"--set '(anonymize\.fixed_regions=.*)'", text).group(1)
    cfg = Config().replace(line)
    assert len(cfg.anonymize.fixed_regions) == 2
    assert main(["overlays", str(src), "--json", "--samples", "12"]) == 0
    assert len(json.loads(capsys.readouterr().out)["regions"]) == 2

    assert main(["anonymize", str(src), "--out", str(tmp_path / "out"), "-m", "mask", "--set", line, *FAKES]) == 0
    assert main(["anonymize", str(src), "--out", str(tmp_path / "plain"), "-m", "mask", *FAKES]) == 0
    out = read_frames(tmp_path / "out" / "scope.mask.mp4", range(N))
    plain = read_frames(tmp_path / "plain" / "scope.mask.mp4", range(N))  # the same run without the regions
    assert len(out) == len(plain) == N
    (tw, th), _ = cv2.getTextSize(NAME, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    keep = np.ones((H, W), bool)
    for x0, y0, x1, y1 in cfg.anonymize.fixed_regions:
        keep[int(y0 * H):int(np.ceil(y1 * H)), int(x0 * W):int(np.ceil(x1 * W))] = False
    for f, g in zip(out, plain):
        assert f[20 - th:22, 6:6 + tw].max() < 40  # black where the name was (white letters before)
        assert f[214:232, 220:300].max() < 40
        assert np.abs(f[keep].astype(int) - g[keep].astype(int)).mean() < 3  # the rest as without them


def test_a_folder_gives_a_manifest_for_the_archive(tmp_path, capsys):
    """`deid overlays FOLDER --manifest m.csv`: one row per video with its own boxes
    (empty without text), which `deid archive` reads as each row's fixed_regions."""
    from deid.archive import load_manifest

    root = tmp_path / "archive"
    (root / "ward").mkdir(parents=True)
    _video(root / "ward" / "scope.mp4")
    _video(root / "plain.mp4", text=False)
    assert main(["overlays", str(root), "--manifest", str(root / "m.csv"), "--samples", "12"]) == 0
    assert "manifest: " in capsys.readouterr().out
    man = load_manifest(root / "m.csv")
    assert not man.errors
    got = {e.video_id: e.fixed_regions for e in man.entries}
    assert got["plain"] == () and len(got["ward__scope"]) == 2
    assert (root / "m.csv").read_text().splitlines()[0] == "video,fixed_regions"


def test_an_opencv_without_contrib_gets_a_clear_error(monkeypatch):
    from deid.errors import ConfigError
    from deid.overlays import swt_available, text_votes

    assert swt_available()  # mediapipe brings opencv-contrib-python
    monkeypatch.delattr(cv2, "text")
    assert not swt_available()
    with pytest.raises(ConfigError, match="opencv-contrib-python"):
        text_votes([np.zeros((8, 8, 3), np.uint8)])


def test_the_leak_audit_warns_about_text_left_in_an_output(tmp_path, caplog):
    """audit.text_check: the audit's frames of each output are searched for text that
    stays put; found -> in the audit record, a warning and a `deid verify` warning; the
    same video with fixed_regions over the text -> nothing; off -> not looked for. It
    never changes an output's hash (it publishes the same)."""
    from deid.archive import method_config_hash
    from deid.pipeline import process_video
    from deid.testing import fake_components
    from deid.verify import verify_folder

    src = _video(tmp_path / "scope.mp4")
    base = Config().replace("detect.backend=color", "track.pose_backend=color_pose", "audit.identity_backend=patch")

    def audit(cfg, out):
        res = process_video(src, tmp_path / out, ["mask"], cfg, components=fake_components(cfg, ["mask"]))
        assert res.status == "done", res.error
        return json.loads((tmp_path / out / "scope.mask.audit.json").read_text())["leak_audit"]

    rep = audit(base, "a")
    assert rep["text_regions"] and all(r[1] < 0.15 or r[3] > 0.85 for r in rep["text_regions"]), rep  # banner / clock rows
    assert any("text stays at the same place" in r.getMessage() for r in caplog.records)
    assert any("text stays at the same place" in f.what for f in verify_folder(tmp_path / "a").warnings)
    boxes = [list(o.fraction) for o in find_overlays(src)[0]]  # what `deid overlays` proposes
    assert audit(base.replace("anonymize.fixed_regions=" + json.dumps(boxes)), "b")["text_regions"] == []
    assert audit(base.replace("audit.text_check=false"), "c")["text_regions"] is None
    assert method_config_hash(base.replace("audit.text_check=false"), "mask") == method_config_hash(base, "mask")
