"""A re-identification attack on de-identified faces, scored as closed-set retrieval.

The attacker holds a gallery: reference embeddings of the patient plus distractor
identities, each labelled. Every face embedding from the processed video is a probe
whose true identity is the patient. For each probe the gallery is ranked by distance:

- rank-1 accuracy: the nearest gallery item carries the probe's identity;
- average precision: mean of precision@k over the ranks k where a same-identity item
  appears (standard retrieval AP, as in person re-identification benchmarks);
- chance levels for the *same* gallery, i.e. what a random ranking scores:
  rank-1 = R / N (R same-identity items among N) and the expected AP of a random
  permutation, E[AP] = H_N / N + (R - 1)(N - H_N) / (N (N - 1)) with H_N the N-th
  harmonic number (derivation: AP = (1/R) sum_k rel_k P@k, take expectations with
  P(rel_k) = R/N and P(rel_j rel_k) = R(R-1)/(N(N-1)) for j != k; the same result as
  Bestgen, "Exact expected average precision of the random baseline", PBML 2015).

An anonymisation works when the attack sits at chance; unprocessed faces score 1.0.
The chance levels assume every ranking of the gallery items is equally likely. In a
gallery whose identities form tight clusters, the items of one identity move together,
so an uninformative probe's expected AP is somewhat above the item-level value (rank-1
chance is unaffected when identities have equally many items); read attack mAP against
chance with that in mind, and rank-1 as the primary score.
Probes that could not be embedded (NaN rows) are counted but not ranked: the attacker
found no usable face there (``coverage`` says how many were usable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInputError
from .identity import DistanceFn, resolve_distance


@dataclass(frozen=True)
class AttackResult:
    rank1: float  # fraction of usable probes whose nearest gallery item is their identity
    mean_ap: float  # mean average precision over usable probes
    chance_rank1: float
    chance_map: float
    probes: int  # probes given
    probes_used: int  # probes with a finite embedding
    gallery: int  # usable gallery items
    identities: int  # distinct gallery labels

    @property
    def coverage(self) -> float:
        return self.probes_used / self.probes if self.probes else float("nan")

    def to_dict(self, prefix: str = "attack_") -> dict[str, Any]:
        return {
            f"{prefix}rank1": self.rank1,
            f"{prefix}map": self.mean_ap,
            f"{prefix}chance_rank1": self.chance_rank1,
            f"{prefix}chance_map": self.chance_map,
            f"{prefix}probes": self.probes,
            f"{prefix}probes_used": self.probes_used,
            f"{prefix}gallery": self.gallery,
        }


def expected_random_ap(n_relevant: int, n_total: int) -> float:
    """Expected AP of a uniformly random ranking of ``n_total`` items of which
    ``n_relevant`` are relevant (see module doc)."""
    r, n = int(n_relevant), int(n_total)
    if n <= 0 or r <= 0:
        return float("nan")
    h = float(np.sum(1.0 / np.arange(1, n + 1)))
    if n == 1:
        return 1.0
    return h / n + (r - 1) * (n - h) / (n * (n - 1))


def average_precision(relevant_sorted: np.ndarray) -> float:
    """AP of one ranking given the relevance flags in ranked order."""
    rel = np.asarray(relevant_sorted, bool)
    if not rel.any():
        return float("nan")
    hits = np.cumsum(rel)
    ranks = np.flatnonzero(rel) + 1
    return float(np.mean(hits[rel] / ranks))


def reid_attack(
    gallery: np.ndarray,
    gallery_labels: Sequence[Any],
    probes: np.ndarray,
    probe_labels: Sequence[Any] | Any,
    distance: str | DistanceFn = "euclidean",
) -> AttackResult:
    """Run the attack. ``gallery`` (N, D) with ``gallery_labels`` (N,); ``probes`` (Q, D)
    with ``probe_labels`` (Q,) or one label for all (the patient)."""
    dist = resolve_distance(distance)
    g = np.asarray(gallery, np.float32)
    p = np.asarray(probes, np.float32)
    if g.ndim != 2 or len(g) == 0:
        raise InvalidInputError(f"reid_attack: gallery must be a non-empty (N, D) array, got {g.shape}")
    g_lab = np.asarray(list(gallery_labels), dtype=object)
    if len(g_lab) != len(g):
        raise InvalidInputError(f"reid_attack: {len(g)} gallery embeddings but {len(g_lab)} labels")
    if p.size == 0:
        p = p.reshape(0, g.shape[1])
    if p.ndim != 2 or p.shape[1] != g.shape[1]:
        raise InvalidInputError(f"reid_attack: probes must have shape (Q, {g.shape[1]}), got {p.shape}")
    if isinstance(probe_labels, (str, bytes)) or np.ndim(probe_labels) == 0:
        p_lab = np.asarray([probe_labels] * len(p), dtype=object)
    else:
        p_lab = np.asarray(list(probe_labels), dtype=object)
    if len(p_lab) != len(p):
        raise InvalidInputError(f"reid_attack: {len(p)} probes but {len(p_lab)} labels")

    keep_g = np.isfinite(g).all(axis=1)
    g, g_lab = g[keep_g], g_lab[keep_g]
    if len(g) == 0:
        raise InvalidInputError("reid_attack: every gallery embedding is NaN; re-embed the reference photos")
    keep_p = np.isfinite(p).all(axis=1)
    used_p, used_lab = p[keep_p], p_lab[keep_p]

    n = len(g)
    rank1, aps, ch1, chap = [], [], [], []
    if len(used_p):
        d = np.asarray(dist(used_p, g), np.float64)
        # stable sort: ties keep gallery order, so results do not depend on the platform
        order = np.argsort(d, axis=1, kind="stable")
        for q in range(len(used_p)):
            rel = g_lab[order[q]] == used_lab[q]
            r = int(rel.sum())
            if r == 0:
                raise InvalidInputError(
                    f"reid_attack: probe label {used_lab[q]!r} is not in the gallery; closed-set "
                    "attack needs the patient's reference embeddings in the gallery"
                )
            rank1.append(float(rel[0]))
            aps.append(average_precision(rel))
            ch1.append(r / n)
            chap.append(expected_random_ap(r, n))
    nan = float("nan")
    return AttackResult(
        rank1=float(np.mean(rank1)) if rank1 else nan,
        mean_ap=float(np.mean(aps)) if aps else nan,
        chance_rank1=float(np.mean(ch1)) if ch1 else _chance_rank1(g_lab, p_lab),
        chance_map=float(np.mean(chap)) if chap else _chance_map(g_lab, p_lab),
        probes=int(len(p)),
        probes_used=int(len(used_p)),
        gallery=int(n),
        identities=int(len(set(g_lab.tolist()))),
    )


def _chance_rank1(g_lab: np.ndarray, p_lab: np.ndarray) -> float:
    """Chance level even when no probe was usable (reported beside a NaN attack score)."""
    if not len(p_lab):
        return float("nan")
    return float(np.mean([(g_lab == lab).sum() / len(g_lab) for lab in p_lab]))


def _chance_map(g_lab: np.ndarray, p_lab: np.ndarray) -> float:
    if not len(p_lab):
        return float("nan")
    return float(np.mean([expected_random_ap(int((g_lab == lab).sum()), len(g_lab)) for lab in p_lab]))
