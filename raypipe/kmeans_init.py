"""Seeding K-means: greedy (weighted) k-means++ on a sample, and k-means|| over shards.

Knows nothing about Ray; k-means|| asks the shards object its questions, so its rounds run
as Ray tasks when the shards live in Ray's object store.
"""
from __future__ import annotations

import numpy as np

from raypipe.kmeans_shard import candidate_weights, parallel_round, row_hashes, shard_cost


def _sq_dist(a: np.ndarray, x: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    """(m, d), (n, d) -> (m, n) squared distances, by matrix product in float64."""
    a64 = a.astype(np.float64)
    return np.maximum((a64 ** 2).sum(1)[:, None] - 2 * a64 @ x.T.astype(np.float64) + x_sq, 0)


def kmeans_plus_plus(x: np.ndarray, k: int, rng, weights: np.ndarray | None = None,
                     trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ (Arthur & Vassilvitskii 2007; scikit-learn's default): each step draws
    `trials` candidates by weighted D^2 sampling and keeps the one that lowers the potential
    most. x: (n, d), weights: (n,) or None -> (k, d)."""
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    trials = trials or 2 + int(np.log(k))
    x_sq = (x.astype(np.float64) ** 2).sum(1)
    first = int(np.searchsorted(np.cumsum(w), rng.random() * w.sum()).clip(0, len(x) - 1))
    centers = [x[first]]
    d2 = _sq_dist(x[first:first + 1], x, x_sq)[0]
    for _ in range(1, k):
        pot = w * d2
        total = pot.sum()
        cand = rng.integers(len(x), size=trials) if total <= 0 else \
            np.searchsorted(np.cumsum(pot), rng.random(trials) * total).clip(0, len(x) - 1)
        cand_d2 = np.minimum(d2[None, :], _sq_dist(x[cand], x, x_sq))
        best = int(np.argmin((cand_d2 * w).sum(1)))
        centers.append(x[cand[best]])
        d2 = cand_d2[best]
    return np.array(centers, np.float32)


def canonical(rows: np.ndarray, seed: int) -> np.ndarray:
    """Rows in an order that depends on their contents only (not on shard order)."""
    order = np.lexsort((*rows.T[::-1], row_hashes(rows, seed)))
    return rows[order]


def kmeans_parallel(shards, k: int, rng, rounds: int = 5, oversampling: float = 2.0):
    """k-means|| (Bahmani et al. 2012): `rounds` oversampling rounds of about
    `oversampling * k` rows each, run by the shards in parallel; then the candidates, weighted
    by how many rows are nearest to each, are reduced to k seeds by weighted k-means++."""
    seed = int(rng.integers(2**31))
    first = canonical(np.concatenate([s[0] for s in shards.sample(
        min(1.0, 64.0 / sum(shards.sizes)), seed)]), seed)
    cand = first[:1] if len(first) else _any_row(shards)
    cost = sum(shards.map(shard_cost, cand))
    for r in range(rounds):
        if cost <= 0:
            break
        found = shards.map(parallel_round, cand, oversampling * k, cost, seed + 1 + r)
        new = [rows for rows, _ in found if len(rows)]
        if new:
            cand = np.concatenate([cand, canonical(np.concatenate(new), seed)])
        cost = sum(shards.map(shard_cost, cand))
    if len(cand) < k:       # tiny or degenerate data: top up with a uniform sample
        extra = np.concatenate([s[0] for s in shards.sample(
            min(1.0, 20.0 * k / sum(shards.sizes)), seed)])
        cand = np.concatenate([cand, canonical(extra, seed)])[: max(k, len(cand))]
    weights = np.sum(shards.map(candidate_weights, cand), axis=0)
    return kmeans_plus_plus(cand, k, rng, weights=weights)


def _any_row(shards) -> np.ndarray:
    return np.concatenate([s[0] for s in shards.sample(1.0, 0)])[:1]
