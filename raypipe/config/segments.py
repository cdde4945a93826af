"""The segments stage's section: K-means, choosing K and the segment hierarchy."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KMeansConfig:
    # A number, or auto: K-means at every K of sweep_k_min..sweep_k_max on a sample of the
    # user vectors, K chosen by segments/sweep.py's rule; the sweep goes to the manifest and
    # the segment_sweep table.
    n_clusters: int | str = 8
    init: str = "k-means||"    # k-means|| (over all shards), k-means++ (on a sample), random
    max_iter: int = 50
    tol: float = 1e-4          # stop when centroids move less than this (relative)
    n_init: int = 1
    seed: int = 0
    # Keep segment ids across runs: match the new centroids to a previous run's (Hungarian
    # matching) and take their ids. `previous`: that run's artifacts; empty = the run this
    # one replaces in the output folder (segment_ids.py).
    stable_ids: bool = True
    previous: str = ""
    sweep_k_min: int = 2
    sweep_k_max: int = 32
    sweep_resamples: int = 4       # half-sample fits per K, compared pairwise (stability)
    sweep_sample: int = 20_000     # user vectors the sweep fits on
    min_stability: float = 0.8     # mean adjusted Rand index between resampled fits
    # A segment hierarchy (segments/tree.py): the number of segments at each level, e.g.
    # [4, 8, 16, 32]. K-means makes the finest level's segments and a tree over them makes
    # the rest, so each level is a cut of the same tree; n_clusters (or the K that auto
    # chooses) is the level of the `segment` column and joins the levels if missing.
    # Empty: flat K-means at n_clusters.
    levels: tuple = ()
    # How the tree is built over the micro-segments (segments/tree.py): ward (merge
    # bottom-up), bisecting (split top-down), anchored (ward within flat K-means' segments at
    # n_clusters, one more fit: the main level as stable as flat K-means).
    tree: str = "ward"

    def __post_init__(self):
        if self.init not in ("k-means||", "k-means++", "random"):
            raise ValueError(f"kmeans.init={self.init!r} should be 'k-means||', 'k-means++' "
                             f"or 'random'")
        if self.n_clusters != "auto" and not isinstance(self.n_clusters, int):
            raise ValueError(f"kmeans.n_clusters={self.n_clusters!r} should be a number or "
                             f"'auto'")
        self.sweep()                      # checks the sweep's range
        if self.n_clusters != "auto" and self.n_clusters < 1 or self.max_iter < 1 or \
                self.n_init < 1:
            raise ValueError(f"kmeans.n_clusters={self.n_clusters}, max_iter={self.max_iter}, "
                             f"n_init={self.n_init} should all be >= 1")
        self._check_levels()

    def _check_levels(self):
        from raypipe.segments.tree import TREES
        object.__setattr__(self, "levels", tuple(sorted(set(self.levels or ()))))
        if self.tree not in TREES:
            raise ValueError(f"kmeans.tree={self.tree!r} should be one of {TREES}")
        if not self.levels:
            return
        if not all(isinstance(n, int) and n >= 2 for n in self.levels):
            raise ValueError(f"kmeans.levels={list(self.levels)} should be numbers >= 2")
        if self.n_clusters != "auto" and self.n_clusters > self.levels[-1]:
            raise ValueError(f"kmeans.n_clusters={self.n_clusters} should be at most the "
                             f"finest level, {self.levels[-1]} (kmeans.levels)")

    def sweep(self):
        """The sweep's settings (segments/sweep.py); with a hierarchy, K stops at its finest
        level."""
        from raypipe.segments.sweep import SweepConfig
        k_max = min(self.sweep_k_max, max(self.levels)) if self.levels else self.sweep_k_max
        return SweepConfig(self.sweep_k_min, max(k_max, self.sweep_k_min),
                           self.sweep_resamples, self.sweep_sample, self.min_stability,
                           self.max_iter, self.seed)

    def levels_with(self, k: int) -> tuple:
        """The hierarchy's levels with the main level k among them; () when flat."""
        return tuple(sorted({*self.levels, k})) if self.levels else ()
