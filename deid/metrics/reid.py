"""A re-identification attack on de-identified faces, scored as closed-set identification.

The attacker holds a gallery: reference embeddings of the patient plus distractor
identities, each labelled. Every face embedding from the processed video is a probe
whose true identity is the patient. Each identity is one *template*, the mean of its
gallery embeddings (as template-based face identification does, e.g. IJB-A/C), and
each probe ranks the identities by distance to their templates:

- rank-1 accuracy: the nearest template is the probe's identity;
- average precision: with one relevant identity among K, AP is 1 / (its rank), i.e.
  this is the mean reciprocal rank;
- chance levels for the *same* gallery, i.e. what a probe that carries no identity
  scores when every identity is equally likely to come first: rank-1 = 1 / K and
  E[AP] = H_K / K (H_K the K-th harmonic number; :func:`expected_random_ap` with one
  relevant item, derived for any number of relevant items below).

Chance is 1 / K only if no identity is favoured by how many embeddings it has, so every
template averages the same number of them: the fewest any identity has, evenly spaced
(``gallery`` counts the embeddings used). Ranking items by nearest neighbour, as before,
favoured the identities with more items, and so does a template of more items (a mean
of more faces sits nearer its identity's centre, hence nearer an unrelated face too):
with one reference photo of the patient against three 8-frame distractor videos,
probes of unrelated people came out as the patient 13 % of the time, not 25 %.

An anonymisation works when the attack sits at chance; unprocessed faces score 1.0.
The attack is only as strong as its gallery: with two or three identities being picked
first says little about a real population, and references taken from the original
video share lighting, pose and camera with the probes (easier than a real attacker's
photos). Probes that could not be embedded (NaN rows) are counted but not ranked: the
attacker found no usable face there (``coverage`` says how many were usable).

Expected AP of a uniformly random ranking of N items with R relevant:
E[AP] = H_N / N + (R - 1)(N - H_N) / (N (N - 1)) (AP = (1/R) sum_k rel_k P@k; take
expectations with P(rel_k) = R/N and P(rel_j rel_k) = R(R-1)/(N(N-1)) for j != k; the
same result as Bestgen, "Exact expected average precision of the random baseline",
PBML 2015).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInputError
from .identity import DistanceFn, resolve_distance


@dataclass(frozen=True)
class AttackResult:
    rank1: float  # fraction of usable probes whose nearest identity template is their identity
    mean_ap: float  # mean average precision over usable probes
    chance_rank1: float
    chance_map: float
    probes: int  # probes given
    probes_used: int  # probes with a finite embedding
    gallery: int  # gallery embeddings used (as many per identity as the identity with the fewest has)
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


def chance_levels(identities: int) -> tuple[float, float]:
    """(rank-1, mAP) of a probe that carries no identity, for a gallery of ``identities``
    templates: 1 / K and H_K / K."""
    k = int(identities)
    return (1.0 / k, expected_random_ap(1, k)) if k > 0 else (float("nan"), float("nan"))


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
    ids = list(dict.fromkeys(g_lab.tolist()))  # gallery order, each identity once
    missing = sorted({str(x) for x in used_lab.tolist()} - {str(x) for x in ids})
    if missing:
        raise InvalidInputError(f"reid_attack: probe label {missing[0]!r} is not in the gallery; closed-set "
                                "attack needs the patient's reference embeddings in the gallery")
    # every identity's template averages the same number of embeddings (the fewest any
    # has, evenly spaced): a mean of more embeddings sits nearer its identity's centre, so
    # it would be nearer an unrelated face too and come first more often than 1 / K
    m = min(int((g_lab == i).sum()) for i in ids)
    members = [np.flatnonzero(g_lab == i) for i in ids]
    members = [ix[np.unique(np.linspace(0, len(ix) - 1, m).round().astype(int))] for ix in members]
    templates = np.stack([g[ix].mean(axis=0) for ix in members])
    k = len(ids)
    rank1, aps = [], []
    if len(used_p):
        d = np.asarray(dist(used_p, templates), np.float64)
        for q in range(len(used_p)):
            rank = 1 + int((d[q] < d[q, ids.index(used_lab[q])]).sum())  # identities strictly closer, plus one
            rank1.append(float(rank == 1))
            aps.append(1.0 / rank)
    nan = float("nan")
    ch1, chap = chance_levels(k) if len(p_lab) else (nan, nan)
    return AttackResult(
        rank1=float(np.mean(rank1)) if rank1 else nan,
        mean_ap=float(np.mean(aps)) if aps else nan,
        chance_rank1=ch1,
        chance_map=chap,
        probes=int(len(p)),
        probes_used=int(len(used_p)),
        gallery=int(m * k),
        identities=k,
    )
