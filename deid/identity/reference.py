"""Find and embed faces when no box is given: reference photos of the patient, donor
photos, frames sampled for a re-identification gallery.

Detection is dlib's HOG detector with upsampling first (fast; the detector whose boxes
dlib's 5-point predictor was trained on), and dlib's MMOD CNN only for images where HOG
finds nothing (slower on CPU, tolerates profile and tilted faces). Both ship in
``face_recognition_models`` / dlib, so this works offline with any identity backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..types import check_frame

#: photos are downscaled to this longest side before detection: bounds the time HOG with
#: upsampling takes on a 12 MP phone photo, while a face filling a tenth of the photo
#: stays ~160 px wide, well above HOG's ~80 px window at upsample 1.
REFERENCE_MAX_SIDE = 1600
#: the CNN fallback runs on a smaller image (it is ~10x slower than HOG on CPU).
CNN_MAX_SIDE = 800

_DETECTORS: dict[str, Any] = {}


def _detector(kind: str, upsample: int):
    key = f"{kind}:{upsample}"
    if key not in _DETECTORS:
        from ..detect.dlib_backend import DlibCnnDetector, DlibHogDetector

        if kind == "hog":
            _DETECTORS[key] = DlibHogDetector(upsample=upsample, max_side=REFERENCE_MAX_SIDE, threads=0)
        else:
            _DETECTORS[key] = DlibCnnDetector(upsample=upsample, max_side=CNN_MAX_SIDE)
    return _DETECTORS[key]


def find_faces(images: Sequence[np.ndarray], upsample: int = 1, cnn_fallback: bool = True) -> list[np.ndarray]:
    """Face boxes (N, 4) float32 xyxy per image: HOG with ``upsample``, then the MMOD
    CNN on images where HOG found none (when ``cnn_fallback``)."""
    for i, img in enumerate(images):
        check_frame(img, f"find_faces: images[{i}]")
    hog = _detector("hog", int(upsample))
    out = [d.boxes for d in hog.detect(list(images))]
    if cnn_fallback:
        missing = [i for i, b in enumerate(out) if len(b) == 0]
        if missing:
            cnn = _detector("cnn", 1 if upsample > 0 else 0)
            for i, d in zip(missing, cnn.detect([images[i] for i in missing])):
                out[i] = d.boxes
    return out


def find_and_embed(encoder: Any, images: Sequence[np.ndarray], upsample: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(boxes, embeddings)`` per image, embeddings from ``encoder`` (any IdentityEncoder).
    Faces the encoder cannot embed keep their NaN rows (callers decide to drop them)."""
    boxes = find_faces(images, upsample=upsample)
    embs = encoder.embed(list(images), boxes)
    return list(zip(boxes, embs))


def load_rgb(path: str | Path) -> np.ndarray:
    """Read a photo as an upright RGB uint8 array (EXIF orientation applied by OpenCV)."""
    import cv2

    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"{p}: reference photo not found; check the path")
    bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidInputError(f"{p}: cannot read as an image (expected JPEG/PNG); convert it or remove it from the reference list")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def reference_embeddings(encoder: Any, paths: Sequence[str | Path], upsample: int = 1) -> np.ndarray:
    """Embeddings (M, D) of every embeddable face in reference photos of one person.

    Raises :class:`InvalidInputError` when a photo holds no face at all: a reference
    set silently missing a photo would make the re-identification attack look weaker
    than it is."""
    rows = []
    for p in paths:
        (boxes, emb), = find_and_embed(encoder, [load_rgb(p)], upsample=upsample)
        if len(boxes) == 0:
            raise InvalidInputError(
                f"{p}: no face found in reference photo (dlib HOG and CNN detectors); "
                "use a photo with a clearly visible, roughly frontal face"
            )
        rows.append(emb[~np.isnan(emb).any(axis=1)])
    dim = int(getattr(encoder, "dim", 0))
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
