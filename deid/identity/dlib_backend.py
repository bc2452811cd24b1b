"""dlib's 128-d face descriptor (the paper's and the project's default identity model).

Pipeline per face box, all from ``face_recognition_models`` (nothing downloaded):
  box -> 5-point shape predictor -> dlib's face chip (150 x 150, padding 0.25, the
  alignment the ResNet was trained with) -> ResNet -> 128-d descriptor.
Two faces are the same person when their Euclidean distance is below 0.6: dlib's
documented operating point for this model (99.38% on LFW; dlib's
``dnn_face_recognition_ex.cpp``) and the threshold Zhu et al. (AIES 2020) use.

Chips of every face in a call go through the network in one batch, which is what makes
``embed`` batch-first rather than a loop over boxes. The network runs on torch by default
(``runtime="torch"``: the same weights read from the same file, the same descriptor to
1e-4, ~10x less CPU than dlib's own forward pass; :mod:`deid.identity.dlib_resnet`);
``runtime="dlib"`` runs dlib's (also used for ``num_jitters > 0``, a dlib feature, and as
the fallback when a user-supplied model file is not the architecture torch can read).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Sequence

import numpy as np

from ..errors import ModelWeightsError
from .base import MIN_FACE_SIZE, check_inputs, embeddable, euclidean_distance, nan_rows, rebuild
from .landmarks import dlib_rect, load_shape_predictor, model_file

#: dlib's same-person radius for ``dlib_face_recognition_resnet_model_v1``.
DLIB_THRESHOLD = 0.6
#: chip geometry dlib's ResNet was trained on (``get_face_chip`` defaults).
CHIP_SIZE = 150
CHIP_PADDING = 0.25
#: where the ResNet runs: torch (default) | dlib.
RUNTIMES = ("torch", "dlib")

log = logging.getLogger(__name__)


class DlibIdentityEncoder:
    """:class:`deid.protocols.IdentityEncoder` on dlib's ResNet (dim 128, Euclidean, 0.6).

    ``num_jitters > 0`` averages that many randomly jittered chips per face (dlib's
    option; slower, slightly more stable). ``batch_size`` bounds the number of chips per
    forward pass (memory). ``runtime``: ``torch`` (default) or ``dlib`` (see the module
    doc); :attr:`runtime` says which one runs."""

    name = "dlib"
    dim = 128

    def __init__(
        self,
        threshold: float = DLIB_THRESHOLD,
        num_jitters: int = 0,
        model_path: str = "",
        predictor_path: str = "",
        min_face_size: float = MIN_FACE_SIZE,
        batch_size: int = 64,
        runtime: str = "torch",
    ):
        import dlib

        if runtime not in RUNTIMES:
            raise ValueError(f"DlibIdentityEncoder: runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self._init_kwargs = dict(
            threshold=threshold, num_jitters=num_jitters, model_path=model_path,
            predictor_path=predictor_path, min_face_size=min_face_size, batch_size=batch_size,
            runtime=runtime,
        )
        self.threshold = float(threshold)
        self.num_jitters = int(num_jitters)
        self.min_face_size = float(min_face_size)
        self.batch_size = max(1, int(batch_size))
        self.model_path = model_path or model_file("resnet")
        self.predictor_path = predictor_path or model_file("sp5")
        self._torch = None
        self._net = None
        if runtime == "torch" and self.num_jitters == 0:
            from .dlib_resnet import DlibResNet

            try:
                self._torch = DlibResNet(self.model_path)
            except ModelWeightsError as e:
                if not os.path.isfile(self.model_path):
                    raise ModelWeightsError(
                        f"{self.model_path}: no such dlib face recognition model; "
                        "reinstall face_recognition_models or fix evaluate.identity.model_path"
                    ) from None
                log.warning("%s; running dlib's own forward pass instead", e)
        if self._torch is None:
            try:
                self._net = dlib.face_recognition_model_v1(self.model_path)
            except RuntimeError as e:
                raise ModelWeightsError(
                    f"{self.model_path}: cannot load dlib face recognition model ({e}); "
                    "reinstall face_recognition_models or fix evaluate.identity.model_path"
                ) from None
        self.runtime = "torch" if self._torch is not None else "dlib"
        self._sp = load_shape_predictor(self.predictor_path)
        self._lock = threading.Lock()

    def __reduce__(self):
        return (rebuild, (type(self), self._init_kwargs))

    # -- protocol -------------------------------------------------------------------
    def embed(self, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        import dlib

        all_boxes = check_inputs(frames, boxes, "DlibIdentityEncoder")
        out = [nan_rows(len(b), self.dim) for b in all_boxes]
        chips: list[np.ndarray] = []
        where: list[tuple[int, int]] = []
        with self._lock:
            for i, (frame, bs) in enumerate(zip(frames, all_boxes)):
                if not len(bs):
                    continue
                h, w = frame.shape[:2]
                img = np.ascontiguousarray(frame)
                for j, b in enumerate(bs):
                    if not embeddable(b, w, h, self.min_face_size):
                        continue
                    shape = self._sp(img, dlib_rect(b))
                    chips.append(dlib.get_face_chip(img, shape, size=CHIP_SIZE, padding=CHIP_PADDING))
                    where.append((i, j))
            for s in range(0, len(chips), self.batch_size):
                batch = chips[s : s + self.batch_size]
                if self._torch is not None:
                    vecs = self._torch(batch)
                else:
                    vecs = self._net.compute_face_descriptor(batch, self.num_jitters)
                for (i, j), v in zip(where[s : s + self.batch_size], vecs):
                    out[i][j] = np.asarray(v, np.float32)
        return out

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return euclidean_distance(np.asarray(a).reshape(-1, self.dim), np.asarray(b).reshape(-1, self.dim))

    # -- reference photos -------------------------------------------------------------
    def find_and_embed(self, images: Sequence[np.ndarray], upsample: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
        """Find every face in each image (no box given; e.g. reference photos of the
        patient) and embed it: one ``(boxes (N, 4), embeddings (N, 128))`` per image.
        See :func:`deid.identity.reference.find_and_embed`."""
        from .reference import find_and_embed

        return find_and_embed(self, images, upsample=upsample)
