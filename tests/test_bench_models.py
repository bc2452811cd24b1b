"""bench.models runs end to end on a short clip and reports a cost for every model, with
the full-range model's calls counted where the short-range one finds no face."""

from bench.models import main


def test_models_bench_reports_every_model(tmp_path, repo_root, capsys):
    from deid.io import VideoWriter, probe, read_frames
    from deid.config import Config

    src = repo_root / "demo_media" / "flipping_a_pancake.mp4"
    clip = tmp_path / "short.mp4"
    with VideoWriter.like(clip, probe(src), Config().io) as w:
        for f in read_frames(src, list(range(16))):
            w.write(f)
    out = main(["--clip", str(clip), "--repeats", "1"])
    for k in ("short", "full", "centerface_ort", "centerface_opencv", "pose", "bare_ms_frame"):
        assert out[k] > 0, k
    import re

    m = re.search(r"MediaPipe full \((\d+) calls in 16 frames\)", capsys.readouterr().out)
    assert m and 4 <= int(m.group(1)) <= 16  # at least every 4th frame (0, 4, 8, 12)


def test_models_bench_names_a_missing_or_broken_clip(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="no such file"):
        main(["--clip", str(tmp_path / "missing.mp4")])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 10)
    with pytest.raises(SystemExit, match="junk.mp4"):
        main(["--clip", str(junk)])
