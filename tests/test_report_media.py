"""On a real face: no image in the report shows anyone dlib can re-identify.

A real talking-head clip (shared test media) is de-identified by the pipeline (blur,
mask, pixelate) and, as the adversarial case, listed once more as a "leaky" output
that is the untouched clip with a frames table claiming no anonymized region (what a
pipeline bug would look like). The report is built with its default face check
(MediaPipe); then every embedded image (JPEG thumbnails, PNG plots) is decoded and searched the way the paper's
attacker does it (dlib HOG detector + dlib's 128-d descriptor, same person below 0.6)
against the faces of the original clip. A control shows the attacker does recognise
the patient in an unchecked thumbnail of the same size, so the test can fail.
"""

import base64
import json
import re
from fractions import Fraction

import numpy as np
import pytest

from conftest import media_path

pytestmark = pytest.mark.media

N_FRAMES = 24


def _trim(src, dst, n):
    import av

    from deid.io import iter_frames, probe

    info = probe(src)
    with av.open(str(dst), "w") as out:
        s = out.add_stream("libx264", rate=Fraction(info.fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = info.width, info.height, "yuv420p"
        s.options = {"crf": "18", "preset": "ultrafast"}
        for i, f in iter_frames(src, stop=n):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return info


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    import shutil

    from deid.audit import write_frames_table
    from deid.config import Config
    from deid.metrics import schemas
    from deid.pipeline import process_video
    from deid.report import build_report

    root = tmp_path_factory.mktemp("report_media")
    clip = root / "patient.mp4"
    info = _trim(media_path("video/talking/talking_head_1.mp4"), clip, N_FRAMES)
    cfg = Config().replace("audit.sample_frames=4", "io.chunk_size=8")
    methods = ["blur", "mask", "pixelate"]
    res = process_video(clip, root / "anon", methods, cfg)
    assert res.status == "done", res.error
    leaky = root / "bug" / "patient.leaky.mp4"
    leaky.parent.mkdir()
    shutil.copy(clip, leaky)
    write_frames_table(leaky.with_name("patient.leaky.frames.parquet"),
                       [(i, "ok", True, [], []) for i in range(N_FRAMES)], "leaky")
    md = root / "metrics"
    md.mkdir()
    processed = {mo.method: mo.path for mo in res.outputs}
    processed["leaky"] = str(leaky)
    run = {"schema_version": "1", "deid_version": "test", "created_utc": "2026-01-01T00:00:00+00:00",
           "config": cfg.to_dict(), "pose_backend": None, "identity_backend": {"name": "dlib", "threshold": 0.6},
           "videos": [{"video": "patient", "original": str(clip), "processed": processed, "fps": info.fps,
                       "width": info.width, "height": info.height, "frame_count": N_FRAMES, "audit": {}}]}
    (md / "run.json").write_text(json.dumps(run))
    schemas.write_table([schemas.summary_row("patient", m, frames=N_FRAMES) for m in ["original", *processed]],
                        md / "summary.parquet", "summary")
    html = build_report(md, root / "report.html")
    return clip, html


def _embedded_images(html):
    """(class, alt, RGB array) of every image embedded in the page: thumbnails and plots."""
    import cv2

    text = html.read_text(encoding="utf-8")
    out = []
    for cls, alt, b64 in re.findall(r'<img class="([^"]*)" alt="([^"]*)" src="data:image/(?:jpeg|png);base64,([^"]+)"', text):
        buf = np.frombuffer(base64.b64decode(b64), np.uint8)
        out.append((cls, alt, cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)))
    assert len(out) == text.count("<img "), "every <img> is a data: URI this test decodes"
    return out


def test_no_embedded_image_is_recognised_as_the_patient(real_report):
    from deid.detect import build_detector
    from deid.io import read_frames
    from deid.registry import IDENTITY_ENCODERS
    from deid.report import summary_path

    clip, html = real_report
    hog = build_detector(name="dlib_hog", upsample=1)
    enc = IDENTITY_ENCODERS.create("dlib")
    originals = read_frames(clip, list(range(0, N_FRAMES, 4)))
    refs = [e for f, d in zip(originals, hog.detect(originals)) if len(d) for e in enc.embed([f], [d.boxes])[0]]
    refs = np.asarray([r for r in refs if np.isfinite(r).all()])
    assert len(refs) >= 3, "dlib should find the patient's face in the original clip"

    images = _embedded_images(html)
    thumbs = [(alt, img) for cls, alt, img in images if cls == "thumb"]
    methods = {alt.split()[0] for alt, _ in thumbs}
    assert {"blur", "mask", "pixelate"} <= methods and len(thumbs) >= 12
    # control: an unchecked thumbnail of the original at the report's size is recognised
    import cv2

    h, w = thumbs[0][1].shape[:2]
    small = cv2.resize(originals[1], (w, h), interpolation=cv2.INTER_AREA)
    det = hog.detect([small])[0]
    assert len(det), "control: dlib finds the face in a plain thumbnail"
    ctrl = enc.embed([small], [det.boxes])[0]
    assert np.nanmin(enc.distance(ctrl, refs)) < enc.threshold, "control: the plain thumbnail is the patient"

    for _, alt, img in images:  # thumbnails and plots alike
        det = hog.detect([img])[0]
        if not len(det):
            continue
        emb = enc.embed([img], [det.boxes])[0]
        emb = emb[np.isfinite(emb).all(axis=1)]
        if len(emb):
            d = float(enc.distance(emb, refs).min())
            assert d >= enc.threshold, f"{alt}: dlib matches the patient (distance {d:.3f})"

    s = json.loads(summary_path(html).read_text())
    leaky_shown = [alt for alt, _ in thumbs if alt.startswith("leaky ")]
    assert s["frame_strips"]["faces_redacted"] >= len(leaky_shown)
    assert s["frame_strips"]["faces_redacted"] + s["frame_strips"]["thumbnails_dropped"] > 0
