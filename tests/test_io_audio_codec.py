"""--keep-audio copies the input's audio; PCM (from a .mov or .avi) in an MP4 is legal
for FFmpeg but many players do not play it: the copy says so and names the fix."""

import logging

import av
import numpy as np

from deid.io.encode import VideoWriter


def _mov_with_pcm(path):
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width = v.height = 64
        v.pix_fmt = "yuv420p"
        a = c.add_stream("pcm_s16le", rate=16000)
        a.layout = "mono"
        for _ in range(10):
            for p in v.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")):
                c.mux(p)
        af = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.int16), format="s16", layout="mono")
        af.sample_rate = 16000
        for p in [*a.encode(af), *a.encode()]:
            c.mux(p)
        for p in v.encode():
            c.mux(p)


def test_pcm_audio_copied_into_an_mp4_is_warned_about(tmp_path, caplog):
    src = tmp_path / "a.mov"
    _mov_with_pcm(src)
    for name, warned in (("o.mp4", True), ("o.mkv", False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING), VideoWriter(tmp_path / name, 64, 64, 25.0, audio_from=src) as w:
            for _ in range(10):
                w.write(np.zeros((64, 64, 3), np.uint8))
        assert ("pcm_s16le audio is copied into an MP4" in caplog.text) == warned, name
        with av.open(str(tmp_path / name)) as c:
            assert len(c.streams.audio) == 1
