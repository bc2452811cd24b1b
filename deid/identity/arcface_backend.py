"""ArcFace (Deng et al., CVPR 2019) through InsightFace's model zoo — optional: the
weights are the user's file (e.g. ``w600k_r50.onnx`` from a buffalo pack); nothing is
fetched.

What this module does and does not do:
- the model is loaded with ``insightface.model_zoo.get_model(path)``, which routes a
  1x3xSxS -> 1xD network to its ``ArcFaceONNX`` class; alignment (``norm_crop`` to
  112 x 112 from 5 keypoints) and input normalisation are InsightFace's own, not
  re-implemented here;
- the 5 keypoints come from dlib's 68-point predictor inside each given box (eye
  centres, nose tip, mouth corners; :func:`deid.identity.landmarks.five_from_68`), so
  any face detector's boxes can be embedded;
- distance is cosine distance ``1 - cos``.

Threshold: cosine *distance* 0.72, i.e. similarity 0.28, the ArcFace same-identity
score at a 0.1% false-accept rate on LFW used by Deb et al., "AdvFaces" (IJCB 2020).
For a leak check a lenient match rule is the safe side (more faces count as still
identifiable); InsightFace 2.1's own GUI uses a stricter similarity 0.4 (distance 0.6,
``insightface/gui/core/constants.py``). Pass ``threshold=`` to change it.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .._ort import accept_half_precision
from ..errors import ModelWeightsError, one_line
from .base import MIN_FACE_SIZE, check_inputs, cosine_distance, embeddable, nan_rows, rebuild
from .landmarks import Landmarks68

ENV_VAR = "DEID_ARCFACE_MODEL"
CONFIG_KEY = "evaluate.identity.model_path"
#: cosine distance under which two ArcFace embeddings are the same person (see module doc).
ARCFACE_THRESHOLD = 0.72


def resolve_model_path(model_path: str = "") -> Path:
    """The ArcFace ONNX to use: ``model_path``, else ``$DEID_ARCFACE_MODEL``."""
    p = model_path or os.environ.get(ENV_VAR, "")
    if not p:
        raise ModelWeightsError(
            "ArcFace identity backend needs a user-supplied ONNX recognition model "
            f"(e.g. w600k_r50.onnx from an InsightFace model pack); set {ENV_VAR}=/path/model.onnx (used wherever "
            f"it runs: the leak audit, audit.identity_backend, and the evaluation) or {CONFIG_KEY} (the evaluation "
            "only), or use the default identity backend 'dlib'"
        )
    path = Path(p).expanduser()
    if not path.is_file():
        raise ModelWeightsError(
            f"ArcFace model {path} not found; fix {ENV_VAR} or {CONFIG_KEY} "
            "(the file cannot be downloaded here)"
        )
    return path


class ArcFaceIdentityEncoder:
    """:class:`deid.protocols.IdentityEncoder` on a user ArcFace ONNX (cosine distance)."""

    name = "arcface"

    def __init__(
        self,
        model_path: str = "",
        threshold: float = ARCFACE_THRESHOLD,
        predictor_path: str = "",
        min_face_size: float = MIN_FACE_SIZE,
        batch_size: int = 32,
    ):
        path = resolve_model_path(model_path)
        self.model_path = str(path)
        self._init_kwargs = dict(
            model_path=self.model_path, threshold=threshold, predictor_path=predictor_path,
            min_face_size=min_face_size, batch_size=batch_size,
        )
        try:
            from insightface.model_zoo import get_model

            model = get_model(self.model_path, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnx / onnxruntime raise many types for a bad file
            raise ModelWeightsError(f"{path}: cannot load as an ONNX model ({type(e).__name__}: {str(e)[:200]}); "
                                    f"check {ENV_VAR} or {CONFIG_KEY}") from None
        if model is None or getattr(model, "taskname", "") != "recognition":
            raise ModelWeightsError(
                f"{path}: not an ArcFace recognition model (InsightFace routed it to "
                f"{type(model).__name__ if model is not None else 'nothing'}); expected input "
                "1x3x112x112 and a single embedding output"
            )
        accept_half_precision(model)
        self._model = model
        shape = list(model.output_shape)
        # an embedding: (N, D), or (N, D, 1, 1) from some exports; an image-shaped output
        # (a restoration or parsing net that takes 112 x 112 too) is not one
        if len(shape) < 2 or any(not (isinstance(v, int) and v == 1) for v in shape[2:]):
            raise ModelWeightsError(
                f"{path}: outputs {shape}, not an embedding vector; an ArcFace recognition model outputs (1, 512) "
                f"(input 1x3x112x112); check {ENV_VAR} or {CONFIG_KEY}"
            )
        self.dim = int(shape[1]) if isinstance(shape[1], int) else 512
        self.threshold = float(threshold)
        self.min_face_size = float(min_face_size)
        self.batch_size = max(1, int(batch_size))
        self._lm = Landmarks68(predictor_path)
        self._lock = threading.Lock()

    def __reduce__(self):
        return (rebuild, (type(self), self._init_kwargs))

    def keypoints(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        """InsightFace-order 5 keypoints (5, 2) for one box (from dlib's 68 points)."""
        return self._lm.five(np.ascontiguousarray(frame), box)

    def embed(self, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        from insightface.utils import face_align

        all_boxes = check_inputs(frames, boxes, "ArcFaceIdentityEncoder")
        out = [nan_rows(len(b), self.dim) for b in all_boxes]
        crops: list[np.ndarray] = []
        where: list[tuple[int, int]] = []
        size = int(self._model.input_size[0])
        for i, (frame, bs) in enumerate(zip(frames, all_boxes)):
            if not len(bs):
                continue
            h, w = frame.shape[:2]
            # InsightFace works on OpenCV BGR images (get_feat swaps to RGB for the net).
            bgr = np.ascontiguousarray(frame[:, :, ::-1])
            for j, b in enumerate(bs):
                if not embeddable(b, w, h, self.min_face_size):
                    continue
                kps = self.keypoints(frame, b)
                with warnings.catch_warnings():
                    # scikit-image >= 0.26 deprecates the estimate() call inside norm_crop
                    warnings.simplefilter("ignore", FutureWarning)
                    crops.append(face_align.norm_crop(bgr, landmark=kps, image_size=size))
                where.append((i, j))
        with self._lock:
            for s in range(0, len(crops), self.batch_size):
                feats = self._embed_crops(crops[s : s + self.batch_size])
                for (i, j), v in zip(where[s : s + self.batch_size], feats):
                    out[i][j] = v
        return out

    def _embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """Aligned crops -> (n, dim) float32, batched when the model's batch axis is
        dynamic, one by one when it is fixed at 1 (as many exported ArcFaces are)."""
        batch_dim = self._model.input_shape[0]
        try:
            if isinstance(batch_dim, int) and batch_dim == 1:
                feats = [np.asarray(self._model.get_feat(c)).reshape(-1) for c in crops]
                return np.asarray(feats, np.float32).reshape(len(crops), self.dim)
            return np.asarray(self._model.get_feat(crops), np.float32).reshape(len(crops), self.dim)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises several types; a reshape of another output size
            msg = one_line(e)
            raise ModelWeightsError(f"ArcFace model {self.model_path} failed on a face ({type(e).__name__}: {msg}); "
                                    f"check {ENV_VAR} or {CONFIG_KEY}") from None

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return cosine_distance(np.asarray(a).reshape(-1, self.dim), np.asarray(b).reshape(-1, self.dim))

    def find_and_embed(self, images: Sequence[np.ndarray], upsample: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
        """Find faces (dlib HOG, then CNN) and embed them; see :mod:`deid.identity.reference`."""
        from .reference import find_and_embed

        return find_and_embed(self, images, upsample=upsample)
