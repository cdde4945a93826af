"""A segment hierarchy: a tree over many micro-segments (the leaves, K-means' clusters at the
finest level), so that every coarser level is a cut of the same tree. Knows nothing about
Ray.

The tree is built from the leaves' centroids and sizes alone, never from the users again:
- `ward`: agglomerative, each step merging the two nodes whose merge raises the users' total
  within-segment sum of squares least (Ward's criterion, n_a n_b / (n_a + n_b) |c_a - c_b|^2
  on size-weighted centroids; PinnerSage and BERTopic's topic trees merge this way);
- `bisecting`: divisive, each step splitting the node whose best 2-means split of its leaves
  (weighted by size) lowers that sum most (bisecting K-means over micro-segments);
- `anchored`: Ward's merges, but a leaf merges only with leaves of its own anchor (the flat
  K-means segment at the main level that holds most of its users) until only the anchors
  are left; so the main level is flat K-means' partition (up to the users of leaves that
  straddle two anchors), while the levels below and above it are still cuts of one tree.
Either way the users' sum of squares at a cut is exact from the leaves:
inertia(leaves) + sum over leaves of n_leaf |c_leaf - c_node|^2 (`cut_inertia`);
bench/hierarchy_bench.py compares the two against flat K-means at each level.

A user's segment at every level comes from their nearest leaf (segmentation.py), so the
coarse segment is always the ancestor of the fine one.
"""
from __future__ import annotations

import numpy as np

TREES = ("ward", "bisecting", "anchored")


def _ward_cost(c: np.ndarray, n: np.ndarray, a: int, others: np.ndarray) -> np.ndarray:
    d = ((c[others] - c[a]) ** 2).sum(1)
    return n[a] * n[others] / (n[a] + n[others]) * d


def ward(centroids: np.ndarray, sizes: np.ndarray, levels: tuple[int, ...],
         anchors: np.ndarray | None = None) -> dict:
    """(m, d) leaf centroids and (m,) sizes -> {L: (m,) node of each leaf at L nodes} for each
    L in `levels` (<= m), merging greedily by Ward's criterion; with `anchors` ((m,) group
    of each leaf), only within a group while more nodes than groups are left."""
    c, n = centroids.astype(np.float64), np.maximum(sizes.astype(np.float64), 1e-9)
    m = len(c)
    label, alive = np.arange(m), np.ones(m, bool)
    group = np.zeros(m, int) if anchors is None else np.unique(anchors, return_inverse=True)[1]
    groups = group.max() + 1

    def row(a: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        live = np.flatnonzero(alive & (np.arange(m) != a))
        costs = _ward_cost(c, n, a, live)
        if count > groups:
            costs[group[live] != group[a]] = np.inf
        return live, costs

    cost = np.full((m, m), np.inf)
    for a in range(m):
        live, costs = row(a, m)
        cost[a, live[live > a]] = costs[live > a]
    cuts = {m: label.copy()} if m in levels else {}
    for count in range(m - 1, min(levels) - 1, -1):
        if count + 1 == groups and groups > 1:          # only the groups left: any pair
            for a in np.flatnonzero(alive):
                live, costs = row(a, count + 1)
                cost[a, live[live > a]] = costs[live > a]
        a, b = np.unravel_index(np.argmin(cost), cost.shape)        # a < b
        c[a] = (n[a] * c[a] + n[b] * c[b]) / (n[a] + n[b])
        n[a] += n[b]
        alive[b], label[label == b] = False, a
        cost[b, :], cost[:, b] = np.inf, np.inf
        live, costs = row(a, count)
        cost[a, live[live > a]], cost[live[live < a], a] = costs[live > a], costs[live < a]
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
          method: str = "ward", anchors: np.ndarray | None = None) -> np.ndarray:
    """Leaves -> paths (m, len(levels)) int32: each leaf's node at every level (ascending;
    the last level is the leaves themselves, so the last column is 0..m-1). `anchors`:
    (m,) each leaf's flat segment at the main level, for method="anchored"."""
    if method not in TREES:
        raise ValueError(f"tree={method!r} should be one of {TREES}")
    levels = tuple(sorted(levels))
    if levels[-1] != len(centroids):
        raise ValueError(f"the finest level ({levels[-1]}) should be the {len(centroids)} "
                         f"leaves")
    if method == "anchored" and anchors is None:
        raise ValueError("tree='anchored' needs each leaf's anchor segment")
    cuts = bisecting(centroids, sizes, levels) if method == "bisecting" else \
        ward(centroids, sizes, levels, anchors if method == "anchored" else None)
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


def leaf_anchors(leaf_labels: np.ndarray, anchor_labels: np.ndarray, m: int) -> np.ndarray:
    """Each user's leaf and flat segment -> (m,) the flat segment holding most of each
    leaf's users."""
    k = int(anchor_labels.max()) + 1
    table = np.bincount(leaf_labels.astype(np.int64) * k + anchor_labels, minlength=m * k)
    return table.reshape(m, k).argmax(1)
