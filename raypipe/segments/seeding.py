"""Seeding K-means: greedy (weighted) k-means++ on a sample, and k-means|| over shards.

Knows nothing about Ray; k-means|| asks the shards object its questions, so its rounds run
as Ray tasks when the shards live in Ray's object store.
"""
from __future__ import annotations

import numpy as np

from raypipe.segments.shard import parallel_sample, parallel_update, parallel_weights, row_hashes


def _sq_dist(a: np.ndarray, x: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    """(m, d), (n, d) -> (m, n) squared distances, by a float32 matrix product."""
    a = np.ascontiguousarray(a, np.float32)
    return np.maximum(np.einsum("ij,ij->i", a, a)[:, None] - 2 * (a @ x.T) + x_sq, 0)


def kmeans_plus_plus(x: np.ndarray, k: int, rng, weights: np.ndarray | None = None,
                     trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ (Arthur & Vassilvitskii 2007; scikit-learn's default): each step draws
    `trials` candidates by weighted D^2 sampling and keeps the one that lowers the potential
    most. x: (n, d), weights: (n,) or None -> (k, d)."""
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    trials = trials or 2 + int(np.log(k))
    x = np.ascontiguousarray(x, np.float32)
    x_sq = np.einsum("ij,ij->i", x, x)
    first = int(np.searchsorted(np.cumsum(w), rng.random() * w.sum()).clip(0, len(x) - 1))
    centers = [x[first]]
    d2 = _sq_dist(x[first:first + 1], x, x_sq)[0].astype(np.float64)
    for _ in range(1, k):
        pot = w * d2
        total = pot.sum()
        cand = rng.integers(len(x), size=trials) if total <= 0 else \
            np.searchsorted(np.cumsum(pot), rng.random(trials) * total).clip(0, len(x) - 1)
        cand_d2 = np.minimum(d2[None, :], _sq_dist(x[cand], x, x_sq))    # float64
        best = int(np.argmin((cand_d2 * w).sum(1)))
        centers.append(x[cand[best]])
        d2 = cand_d2[best]
    return np.array(centers, np.float32)


def canonical(rows: np.ndarray, seed: int) -> np.ndarray:
    """Rows in an order fixed by their contents (equal rows are interchangeable), so results
    do not depend on how the data is split into shards."""
    return rows[np.argsort(row_hashes(rows, seed), kind="stable")]


def kmeans_parallel(shards, k: int, rng, rounds: int = 2, oversampling: float = 2.0,
                    sample_size: int | None = None):
    """k-means|| (Bahmani et al. 2012; Spark's defaults: 2 rounds of about 2k rows; k rows
    per round cost 15% more inertia in bench/kmeans_bench.py): each
    round the shards keep rows with probability proportional to their squared distance to
    the candidates so far; the candidates, weighted by how many rows are nearest to each,
    are reduced to k seeds by weighted k-means++. With `sample_size`, the rounds run over a
    content-hash sample of about that many rows (at least 40 per cluster) instead of all."""
    n, seed = sum(shards.sizes), int(rng.integers(2**31))
    fraction = 1.0 if not sample_size else min(1.0, max(sample_size, 40 * k) / n)
    start = canonical(np.concatenate(shards.sample(min(1.0, 64.0 / n), seed)), seed)
    if len(start) == 0:
        start = canonical(np.concatenate(shards.sample(1.0, seed)), seed)
    cand = start[:1]
    states, costs = shards.scan(parallel_update, None, cand, 0, fraction, seed)
    for r in range(rounds):
        cost = sum(costs)
        if cost <= 0:
            break
        # Not `seed`: the sample kept rows whose draw under it was below `fraction`, and the
        # same draws again would keep 1 / fraction times too many candidates.
        states, found = shards.scan(parallel_sample, states, oversampling * k, cost,
                                    seed + 1 + r)
        new = np.concatenate(found)
        if len(new) == 0:
            break
        new = canonical(new, seed)
        states, costs = shards.scan(parallel_update, states, new, len(cand))
        cand = np.concatenate([cand, new])
    weights = np.sum(shards.scan(parallel_weights, states, len(cand))[1], axis=0)
    if len(cand) < k:       # tiny or degenerate data: every row is a candidate
        cand = canonical(np.concatenate(shards.sample(1.0, seed)), seed)
        weights = None
    return kmeans_plus_plus(cand, k, rng, weights=weights)
