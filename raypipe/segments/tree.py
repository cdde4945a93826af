"""A segment hierarchy: a tree over many micro-segments (the leaves, K-means' clusters at the
finest level), so that every coarser level is a cut of the same tree. Knows nothing about
Ray.

The tree is built from the leaves' centroids and sizes alone, never from the users again:
- `ward`: agglomerative, each step merging the two nodes whose merge raises the users' total
  within-segment sum of squares least (Ward's criterion, n_a n_b / (n_a + n_b) |c_a - c_b|^2
  on size-weighted centroids; PinnerSage and BERTopic's topic trees merge this way);
- `bisecting`: divisive, each step splitting the node whose best 2-means split of its leaves
  (weighted by size) lowers that sum most (bisecting K-means over micro-segments);
- `kmeans`: divisive by level, each level a weighted K-means of the leaves within each
  parent, the number of children shared out by gain.
Either way the users' sum of squares at a cut is exact from the leaves:
inertia(leaves) + sum over leaves of n_leaf |c_leaf - c_node|^2 (`cut_inertia`);
bench/hierarchy_bench.py compares the two against flat K-means at each level.

A user's segment at every level comes from their nearest leaf (segmentation.py), so the
coarse segment is always the ancestor of the fine one.
"""
from __future__ import annotations

import numpy as np

TREES = ("ward", "bisecting", "kmeans")


def _ward_cost(c: np.ndarray, n: np.ndarray, a: int, others: np.ndarray) -> np.ndarray:
    d = ((c[others] - c[a]) ** 2).sum(1)
    return n[a] * n[others] / (n[a] + n[others]) * d


def ward(centroids: np.ndarray, sizes: np.ndarray, levels: tuple[int, ...]) -> dict:
    """(m, d) leaf centroids and (m,) sizes -> {L: (m,) node of each leaf at L nodes} for each
    L in `levels` (<= m), merging greedily by Ward's criterion."""
    c, n = centroids.astype(np.float64), np.maximum(sizes.astype(np.float64), 1e-9)
    m = len(c)
    label, alive = np.arange(m), np.ones(m, bool)
    cost = np.full((m, m), np.inf)
    for a in range(m):
        cost[a, a + 1:] = _ward_cost(c, n, a, np.arange(a + 1, m))
    cuts = {m: label.copy()} if m in levels else {}
    for count in range(m - 1, min(levels) - 1, -1):
        a, b = np.unravel_index(np.argmin(cost), cost.shape)        # a < b
        c[a] = (n[a] * c[a] + n[b] * c[b]) / (n[a] + n[b])
        n[a] += n[b]
        alive[b], label[label == b] = False, a
        cost[b, :], cost[:, b] = np.inf, np.inf
        live = np.flatnonzero(alive & (np.arange(m) != a))
        row = _ward_cost(c, n, a, live)
        cost[a, live[live > a]], cost[live[live < a], a] = row[live > a], row[live < a]
        if count in levels:
            cuts[count] = label.copy()
    return {k: np.unique(v, return_inverse=True)[1] for k, v in cuts.items()}


def _two_means(c: np.ndarray, n: np.ndarray, iters: int = 50) -> tuple[np.ndarray, float]:
    """Weighted 2-means of a node's leaves -> (side of each leaf, the sum-of-squares drop).
    Seeded with the leaf farthest from the node's mean and the leaf farthest from that one,
    so the split is deterministic."""
    mean = n @ c / n.sum()
    a = int(np.argmax(((c - mean) ** 2).sum(1)))
    b = int(np.argmax(((c - c[a]) ** 2).sum(1)))
    centres, side = c[[a, b]], None
    for _ in range(iters):
        new = ((c[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        if new.min() == new.max() or (side is not None and (new == side).all()):
            break
        side = new
        centres = np.stack([n[side == s] @ c[side == s] / n[side == s].sum() for s in (0, 1)])
    if side is None:                  # identical leaves: any split gains nothing
        return (np.arange(len(c)) == b).astype(int), 0.0
    before = n @ ((c - mean) ** 2).sum(1)
    after = sum(n[side == s] @ ((c[side == s] - centres[s]) ** 2).sum(1) for s in (0, 1))
    return side, float(before - after)


def bisecting(centroids: np.ndarray, sizes: np.ndarray, levels: tuple[int, ...]) -> dict:
    """Like `ward`, top-down: split the node whose 2-means split of its leaves gains most."""
    c, n = centroids.astype(np.float64), np.maximum(sizes.astype(np.float64), 1e-9)
    m = len(c)
    label, splits = np.zeros(m, int), {}
    cuts = {1: label.copy()} if 1 in levels else {}
    for count in range(2, max(levels) + 1):
        for node in set(range(count - 1)) - set(splits):
            rows = np.flatnonzero(label == node)
            splits[node] = _two_means(c[rows], n[rows]) if len(rows) > 1 else (None, -1.0)
        node = max(splits, key=lambda s: (splits[s][1], -s))
        side, _ = splits.pop(node)
        rows = np.flatnonzero(label == node)
        label[rows[side == 1]] = count - 1
        if count in levels:
            cuts[count] = label.copy()
    return cuts


def _kmeans(c: np.ndarray, n: np.ndarray, k: int, restarts: int = 8, iters: int = 50):
    """Weighted K-means of a node's leaves -> (labels, sum of squares), best of `restarts`
    seeded k-means++ runs (fixed seeds: the same leaves give the same split)."""
    if k >= len(c):
        return np.arange(len(c)), 0.0
    best = (None, np.inf)
    for r in range(restarts):
        rng = np.random.default_rng(r)
        centres = c[[rng.choice(len(c), p=n / n.sum())]]
        for _ in range(k - 1):
            d = ((c[:, None] - centres[None]) ** 2).sum(-1).min(1) * n
            centres = np.vstack([centres, c[rng.choice(len(c), p=d / d.sum())]]) \
                if d.sum() > 0 else np.vstack([centres, c[len(centres)]])
        for _ in range(iters):
            labels = ((c[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
            new = np.stack([n[labels == j] @ c[labels == j] / n[labels == j].sum()
                            if (labels == j).any() else centres[j] for j in range(k)])
            if np.allclose(new, centres):
                break
            centres = new
        sse = float(sum(n[labels == j] @ ((c[labels == j] - centres[j]) ** 2).sum(1)
                        for j in range(k)))
        if sse < best[1] and len(np.unique(labels)) == k:
            best = (labels, sse)
    return best if best[0] is not None else (np.arange(len(c)) % k, np.inf)


def kmeans(centroids: np.ndarray, sizes: np.ndarray, levels: tuple[int, ...]) -> dict:
    """Top-down, level by level: each level's segments are a weighted K-means of their
    parent's leaves, the children shared out one at a time to the parent whose split gains
    most. The coarse levels are then (nearly) flat K-means' own partitions, which are
    stabler across seeds than merges of micro-segments."""
    c, n = centroids.astype(np.float64), np.maximum(sizes.astype(np.float64), 1e-9)
    label, cuts = np.zeros(len(c), int), {}
    for level in levels:
        nodes = np.unique(label)
        rows = {p: np.flatnonzero(label == p) for p in nodes}
        split = {p: {1: (np.zeros(len(rows[p]), int), _sse(c[rows[p]], n[rows[p]]))}
                 for p in nodes}
        share = {p: 1 for p in nodes}
        for _ in range(level - len(nodes)):
            for p in nodes:
                if share[p] + 1 not in split[p] and share[p] < len(rows[p]):
                    split[p][share[p] + 1] = _kmeans(c[rows[p]], n[rows[p]], share[p] + 1)
            gain = {p: split[p][share[p]][1] - split[p][share[p] + 1][1] for p in nodes
                    if share[p] < len(rows[p])}
            p = max(gain, key=lambda q: (gain[q], -q))
            share[p] += 1
        new, base = np.empty_like(label), 0
        for p in nodes:
            new[rows[p]] = base + split[p][share[p]][0]
            base += share[p]
        label = new
        cuts[level] = label.copy()
    return cuts


def _sse(c: np.ndarray, n: np.ndarray) -> float:
    return float(n @ ((c - n @ c / n.sum()) ** 2).sum(1))


def cut_inertia(centroids: np.ndarray, sizes: np.ndarray, labels: np.ndarray) -> float:
    """The between-leaf part of the users' sum of squares at a cut (add the leaves' own
    inertia for the whole)."""
    c, n = centroids.astype(np.float64), sizes.astype(np.float64)
    total = 0.0
    for s in np.unique(labels):
        rows = labels == s
        if n[rows].sum() > 0:
            mean = n[rows] @ c[rows] / n[rows].sum()
            total += float(n[rows] @ ((c[rows] - mean) ** 2).sum(1))
    return total


def build(centroids: np.ndarray, sizes: np.ndarray, levels: tuple[int, ...],
          method: str = "ward") -> np.ndarray:
    """Leaves -> paths (m, len(levels)) int32: each leaf's node at every level (ascending;
    the last level is the leaves themselves, so the last column is 0..m-1)."""
    if method not in TREES:
        raise ValueError(f"tree={method!r} should be one of {TREES}")
    levels = tuple(sorted(levels))
    if levels[-1] != len(centroids):
        raise ValueError(f"the finest level ({levels[-1]}) should be the {len(centroids)} "
                         f"leaves")
    cuts = {"ward": ward, "bisecting": bisecting, "kmeans": kmeans}[method](
        centroids, sizes, levels)
    cuts[len(centroids)] = np.arange(len(centroids))
    return np.stack([cuts[k] for k in levels], 1).astype(np.int32)


def node_centroids(leaves: np.ndarray, sizes: np.ndarray, column: np.ndarray, k: int):
    """-> ((k, d) size-weighted mean of each node's leaves, (k,) node sizes). Empty leaves
    weigh next to nothing, so a node of empty leaves gets their plain mean."""
    w = np.where(sizes > 0, sizes, 1e-9).astype(np.float64)
    sums = np.zeros((k, leaves.shape[1]))
    np.add.at(sums, column, w[:, None] * leaves.astype(np.float64))
    out = sums / np.bincount(column, weights=w, minlength=k)[:, None]
    return out.astype(np.float32), np.bincount(column, weights=sizes, minlength=k).astype(np.int64)


def parents(paths: np.ndarray) -> list[np.ndarray]:
    """Per level, the parent (node at the next coarser level) of each node; -1 at the
    coarsest."""
    out = [np.full(paths[:, 0].max() + 1, -1, np.int32)]
    for j in range(1, paths.shape[1]):
        p = np.full(paths[:, j].max() + 1, -1, np.int32)
        p[paths[:, j]] = paths[:, j - 1]
        out.append(p)
    return out
