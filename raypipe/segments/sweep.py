"""Choosing the number of segments: K-means at each K of a range, scored on a sample of the
user vectors. Knows nothing about Ray: every trial is a pure function of (sample, K, seed),
handed to a `map` (the builtin in process; Ray tasks in jobs/sweep.py).

Per K, one fit on the whole sample (the best of `n_init` restarts: one unlucky seeding at the
right K would otherwise hide it) gives the internal criteria: silhouette (higher is
better; on at most SILHOUETTE_ROWS rows), Calinski-Harabasz (higher), Davies-Bouldin
(lower), inertia. `resamples` more fits, each on a different random half of the sample with
its own seed, label the whole sample; stability is the mean adjusted Rand index between
those labelings over all pairs (Ben-Hur et al. 2002; Lange et al. 2004): a K that splits
the data the same way whatever the half and the seed is stable.

The rule (`choose`): among the K whose stability reaches `min_stability`, the one with the
highest silhouette; if no K is that stable, the most stable one. Silhouette alone favours
coarse splits of overlapping data less than Calinski-Harabasz does, and ranks K on well
separated data correctly; stability rules out K that cut a natural group at random.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from raypipe.segments.kmeans import KMeans, mean_pairwise_ari

CRITERIA = ("silhouette", "calinski_harabasz", "davies_bouldin", "stability")
SILHOUETTE_ROWS = 5000       # silhouette is O(n^2): measured on a fixed subset of the sample


@dataclass(frozen=True)
class SweepConfig:
    k_min: int = 2
    k_max: int = 32
    resamples: int = 4             # half-sample fits per K for stability (pairs: r(r-1)/2)
    sample_rows: int = 20_000      # user vectors the sweep fits on
    min_stability: float = 0.8     # mean ARI a K needs to be chosen
    max_iter: int = 50
    seed: int = 0
    n_init: int = 3                # restarts of the whole-sample fit

    def __post_init__(self):
        if not 2 <= self.k_min <= self.k_max:
            raise ValueError(f"sweep range k_min={self.k_min}..k_max={self.k_max} should have "
                             f"2 <= k_min <= k_max")
        if self.resamples < 2:
            raise ValueError(f"resamples={self.resamples} should be >= 2 (stability compares "
                             f"pairs of fits)")

    @property
    def ks(self) -> list[int]:
        return list(range(self.k_min, self.k_max + 1))


def trial(x: np.ndarray, k: int, resample: int, cfg: SweepConfig) -> dict:
    """One K-means fit of the sweep. resample = -1: on the whole sample, -> its criteria;
    else on random half number `resample`, -> labels of the whole sample (int16)."""
    seed = int(np.random.SeedSequence([cfg.seed, k, resample + 1]).generate_state(1)[0])
    start = time.perf_counter()
    if resample < 0:
        km = KMeans(k, random_state=seed, max_iter=cfg.max_iter, n_init=cfg.n_init).fit(x)
        out = {"k": k, "inertia": float(km.inertia_), **criteria(x, km.labels_, seed)}
    else:
        half = np.random.default_rng(seed).permutation(len(x))[: max(k, len(x) // 2)]
        km = KMeans(k, random_state=seed, max_iter=cfg.max_iter).fit(x[half])
        out = {"k": k, "resample": resample, "labels": km.predict(x).astype(np.int16)}
    out["seconds"] = time.perf_counter() - start
    return out


def criteria(x: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    from sklearn.metrics import (calinski_harabasz_score, davies_bouldin_score,
                                 silhouette_score)
    if len(np.unique(labels)) < 2:
        return {"silhouette": -1.0, "calinski_harabasz": 0.0, "davies_bouldin": float("inf")}
    n = min(len(x), SILHOUETTE_ROWS)
    return {"silhouette": float(silhouette_score(x, labels, sample_size=n, random_state=seed)),
            "calinski_harabasz": float(calinski_harabasz_score(x, labels)),
            "davies_bouldin": float(davies_bouldin_score(x, labels))}


def sweep(x: np.ndarray, cfg: SweepConfig, map_fn=None) -> dict:
    """Every trial of the sweep -> {rows: one dict per K (criteria, stability, seconds),
    chosen_k, rule, ...}. `map_fn(fn, x, jobs)` returns `fn(x, *job)` for each job
    (default: in process, one after another)."""
    if len(x) < 2 * cfg.k_max:
        raise ValueError(f"the sweep needs at least 2 x k_max = {2 * cfg.k_max} vectors, "
                         f"got {len(x)}")
    jobs = [(k, r, cfg) for k in cfg.ks for r in range(-1, cfg.resamples)]
    start = time.perf_counter()
    run = map_fn or (lambda fn, x, jobs: [fn(x, *job) for job in jobs])
    results = run(trial, x, jobs)
    rows = []
    for k in cfg.ks:
        whole = next(r for r in results if r["k"] == k and "resample" not in r)
        halves = [r["labels"] for r in results if r["k"] == k and "resample" in r]
        rows.append({**{key: v for key, v in whole.items() if key != "seconds"},
                     "stability": mean_pairwise_ari(halves),
                     "seconds": round(sum(r["seconds"] for r in results if r["k"] == k), 3)})
    chosen = choose(rows, cfg.min_stability)
    return {"rule": f"highest silhouette among K with stability >= {cfg.min_stability} "
                    f"(else the most stable K)",
            "k_range": [cfg.k_min, cfg.k_max], "resamples": cfg.resamples,
            "sample_rows": len(x), "trials": len(jobs), "chosen_k": chosen,
            "seconds": round(time.perf_counter() - start, 2), "rows": rows}


def choose(rows: list[dict], min_stability: float) -> int:
    stable = [r for r in rows if r["stability"] >= min_stability]
    if not stable:
        return int(max(rows, key=lambda r: (r["stability"], -r["k"]))["k"])
    return int(max(stable, key=lambda r: (r["silhouette"], -r["k"]))["k"])
