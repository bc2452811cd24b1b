"""anonymize.fixed_regions: burnt-in text at known places, filled on every frame of every output."""

import numpy as np
import pytest

from deid.anonymize.base import fill_fixed, fixed_rects
from deid.archive import method_config_hash
from deid.config import Config
from deid.errors import ConfigError
from deid.io import probe, read_frames
from deid.pipeline import process_video
from deid.testing import fake_components, make_synthetic_video

MAGENTA = (255, 0, 255)
CFG = Config().replace("audit.sample_frames=8", "io.chunk_size=8", "track.lookahead=24",
                       "anonymize.fixed_regions=[[0, 0, 0.5, 0.25], [0.9, 0.9, 1, 1]]", f"anonymize.fixed_color={list(MAGENTA)}")


def test_rects_round_outwards_and_clip():
    assert fixed_rects([(0, 0, 0.5, 0.25)], 160, 120) == [(0, 0, 80, 30)]
    assert fixed_rects([(0.101, 0.101, 0.2, 0.2)], 100, 100) == [(10, 10, 20, 20)]  # 10.1 -> 10: never less than asked
    assert fixed_rects([(0.9, 0.9, 1.0, 1.0)], 33, 17) == [(29, 15, 33, 17)]
    frame = np.full((120, 160, 3), 7, np.uint8)
    frame.setflags(write=False)  # a decoded frame shared by every method's output
    out = fill_fixed(frame, [(0, 0, 0.5, 0.25)], MAGENTA)
    assert out is not frame and (frame == 7).all()
    assert (out[:30, :80] == MAGENTA).all() and (out[30:] == 7).all() and (out[:, 80:] == 7).all()
    assert fill_fixed(frame, (), MAGENTA) is frame


def test_bad_regions_are_refused():
    for bad in ("[[0, 0, 0.4]]", "[[0.5, 0, 0.4, 0.1]]", "[[0, 0, 1.5, 1]]", "[[0, -0.1, 1, 1]]", "[[0, 0, 1, .nan]]"):
        with pytest.raises(ConfigError, match="anonymize.fixed_regions"):
            Config().replace(f"anonymize.fixed_regions={bad}")
    with pytest.raises(ConfigError, match="fixed_color"):
        Config().replace("anonymize.fixed_color=[0, 0, 300]")


@pytest.mark.parametrize("methods", [["blur", "mask"], ["pixelate"]])
def test_every_frame_of_every_output_is_filled(tmp_path, methods):
    """Filled on frames with and without faces (the anonymizers hand a face-free frame
    back as it is), and nothing outside the regions changes colour."""
    clip = make_synthetic_video(tmp_path / "scope.mp4", n_frames=20, no_person=[5, 6])
    res = process_video(clip.path, tmp_path / "out", methods, CFG, components=fake_components(CFG, methods))
    assert res.status == "done", res.error
    src = read_frames(clip.path, range(20))
    for o in res.outputs:
        frames = read_frames(o.path, range(20))
        assert len(frames) == probe(clip.path).frame_count == 20
        for f, s in zip(frames, src):
            top_left = f[2:28, 2:78].reshape(-1, 3).mean(axis=0)
            corner = f[110:, 146:].reshape(-1, 3).mean(axis=0)
            assert np.abs(top_left - MAGENTA).max() < 12 and np.abs(corner - MAGENTA).max() < 20, (o.method, top_left, corner)
            # below the banner, away from the face: the picture as it was (up to the codec)
            assert np.abs(f[60:100, 4:40].astype(int) - s[60:100, 4:40].astype(int)).mean() < 6


def test_the_regions_are_part_of_an_outputs_hash_only_when_set():
    """Changing them redoes the outputs an archive made; outputs made without them keep
    their hash (a fixed_color with no region shapes nothing)."""
    base = Config()
    assert method_config_hash(base.replace("anonymize.fixed_color=[9, 9, 9]"), "blur") == method_config_hash(base, "blur")
    assert method_config_hash(base.replace("anonymize.fixed_color=[9, 9, 9]"), "swap") == method_config_hash(base, "swap")
    with_regions = base.replace("anonymize.fixed_regions=[[0, 0, 0.5, 0.1]]")
    assert method_config_hash(with_regions, "blur") != method_config_hash(base, "blur")
    assert method_config_hash(with_regions, "swap") != method_config_hash(base, "swap")
    assert method_config_hash(with_regions.replace("anonymize.fixed_color=[9, 9, 9]"), "mask") != method_config_hash(with_regions, "mask")
