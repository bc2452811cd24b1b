"""Identity gate: is a swapped face still the patient?

Two attackers, the same two the leak audit plays (:mod:`deid.audit`), with the
project's identity encoder (dlib 128-d by default, same person below 0.6):

- *same place*: the swapped face is embedded at its box and compared with the original
  face at that box in the same frame (same pose, same light: the strongest comparison);
- *reference*: compared with the patient's reference embeddings (faces from the
  patient's own video, taken when the face set was extracted).

A face passes when both distances are at least ``threshold + margin``. The margin
(0.05) is there because the audit embeds at dlib's own HOG boxes, which are not the
boxes the gate uses, and a chip a few pixels off moves a dlib distance by a few
hundredths. A face the encoder cannot embed at all fails (fail closed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

GATE_MARGIN = 0.05


@dataclass(frozen=True)
class GateResult:
    passed: bool
    d_same: float  # distance to the original face at the same place (nan: original not embeddable)
    d_ref: float  # smallest distance to the patient's references (nan: no references)
    why: str = ""


class IdentityGate:
    def __init__(self, identity: Any, references: np.ndarray | None = None, threshold: float | None = None, margin: float = GATE_MARGIN):
        self.identity = identity
        dim = int(getattr(identity, "dim", 0) or (0 if references is None else np.asarray(references).shape[-1]))
        refs = np.zeros((0, dim), np.float32) if references is None else np.asarray(references, np.float32).reshape(-1, dim)
        self.references = refs[np.all(np.isfinite(refs), axis=1)] if len(refs) else refs
        self.threshold = float(identity.threshold if threshold is None else threshold)
        self.margin = float(margin)

    @property
    def limit(self) -> float:
        return self.threshold + self.margin

    def _ref_distance(self, e: np.ndarray) -> float:
        if not len(self.references) or not np.all(np.isfinite(e)):
            return math.nan
        return float(np.min(self.identity.distance(e[None], self.references)))

    def check(self, original: np.ndarray, swapped: np.ndarray, boxes: Sequence[np.ndarray]) -> list[GateResult]:
        """One result per box: ``swapped`` (the output frame) against ``original`` and the references."""
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        if not len(b):
            return []
        e_in, e_out = self.identity.embed([original, swapped], [b, b])
        out = []
        for k in range(len(b)):
            eo = np.asarray(e_out[k], np.float32)
            ei = np.asarray(e_in[k], np.float32)
            if not np.all(np.isfinite(eo)):
                out.append(GateResult(False, math.nan, math.nan, "swapped face could not be embedded"))
                continue
            d_same = float(self.identity.distance(ei[None], eo[None])[0, 0]) if np.all(np.isfinite(ei)) else math.nan
            d_ref = self._ref_distance(eo)
            fails = [name for name, d in (("same place", d_same), ("reference", d_ref)) if not math.isnan(d) and d < self.limit]
            if math.isnan(d_same) and math.isnan(d_ref):
                out.append(GateResult(False, d_same, d_ref, "nothing to compare with"))
            elif fails:
                out.append(GateResult(False, d_same, d_ref, "still matches the patient (" + ", ".join(fails) + ")"))
            else:
                out.append(GateResult(True, d_same, d_ref))
        return out

    def is_patient(self, frame: np.ndarray, boxes: Sequence[np.ndarray]) -> list[tuple[bool | None, float]]:
        """Per box: (is this the patient?, distance to the closest reference); None when
        the face cannot be embedded or there are no references."""
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        if not len(b):
            return []
        embs = self.identity.embed([frame], [b])[0]
        res: list[tuple[bool | None, float]] = []
        for e in embs:
            d = self._ref_distance(np.asarray(e, np.float32))
            res.append((None, d) if math.isnan(d) else (d < self.threshold, d))
        return res
