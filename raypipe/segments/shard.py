"""What one shard of vectors answers, as pure functions of (shard, small arguments).

Knows nothing about Ray: `kmeans.LocalShards` calls these in process, `jobs/kmeans_tasks`
calls them as Ray tasks on shards in the object store. Distances are blocked float32 matrix
products: numpy's BLAS on CPU (faster than torch's or the faiss-cpu wheel's here), torch on
the GPU when the process has one.
"""
from __future__ import annotations

import functools
import os

import numpy as np

BLOCK = 8192           # rows per distance block (BLOCK x k floats); measured best here


@functools.lru_cache(maxsize=1)
def use_gpu() -> bool:
    """CUDA visible to this process? torch is imported only where a GPU may exist, so CPU
    workers start without paying its import."""
    if not os.path.exists("/dev/nvidiactl") or os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return False
    import torch
    return torch.cuda.is_available()


def _nearest(x: np.ndarray, centroids: np.ndarray, k: int = 1):
    """Yield (row slice, squared distances (b, k), labels (b, k)) block by block: on the GPU
    with torch when there is one, else with numpy's BLAS (faster than torch's on CPU here)."""
    if use_gpu():
        yield from _nearest_torch(x, centroids, k)
        return
    c = np.ascontiguousarray(centroids, np.float32)
    c_sq = (c * c).sum(1)
    for start in range(0, len(x), BLOCK):
        xb = np.ascontiguousarray(x[start:start + BLOCK], np.float32)
        d = xb @ c.T
        d *= -2.0
        d += c_sq                                   # |c|^2 - 2 x.c, |x|^2 added below
        if k <= 2:      # argmin (twice) is several times faster than argpartition
            rows = np.arange(len(d))
            labels = d.argmin(1)[:, None]
            if k == 2:
                first = d[rows, labels[:, 0]]
                d[rows, labels[:, 0]] = np.inf
                labels = np.concatenate([labels, d.argmin(1)[:, None]], 1)
                d[rows, labels[:, 0]] = first
        else:
            labels = np.argpartition(d, k - 1, axis=1)[:, :k]
            labels = np.take_along_axis(labels, np.take_along_axis(d, labels, 1).argsort(1), 1)
        best = np.take_along_axis(d, labels, 1) + np.einsum("ij,ij->i", xb, xb)[:, None]
        yield slice(start, start + len(xb)), np.maximum(best, 0), labels


def _nearest_torch(x: np.ndarray, centroids: np.ndarray, k: int):
    import torch
    dev = torch.device("cuda")
    c = torch.from_numpy(np.ascontiguousarray(centroids, np.float32)).to(dev)
    c_sq = (c * c).sum(1)
    for start in range(0, len(x), BLOCK):
        xb = torch.from_numpy(np.ascontiguousarray(x[start:start + BLOCK], np.float32)).to(dev)
        d = torch.addmm(c_sq.unsqueeze(0), xb, c.T, alpha=-2.0)
        best, labels = torch.topk(d, k, dim=1, largest=False)
        best += (xb * xb).sum(1, keepdim=True)
        yield (slice(start, start + len(xb)), best.clamp_(min=0).cpu().numpy(),
               labels.cpu().numpy())


def assign(x: np.ndarray, centroids: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """x: (n, d), centroids: (c, d) -> (squared distances (n, k), labels (n, k)), nearest first."""
    if x.shape[1] != centroids.shape[1]:
        raise ValueError(f"dimension mismatch: x has d={x.shape[1]}, centroids "
                         f"d={centroids.shape[1]}")
    d2 = np.empty((len(x), k), np.float32)
    labels = np.empty((len(x), k), np.int64)
    for rows, best, lab in _nearest(x, centroids, k):
        d2[rows], labels[rows] = best, lab
    return d2, labels


def _add_rows(sums: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> None:
    """sums[labels[i]] += rows[i], by sorting labels (np.add.at is far slower)."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=len(sums))
    present = np.flatnonzero(counts)
    starts = np.r_[0, np.cumsum(counts[present])[:-1]]
    sums[present] += np.add.reduceat(rows[order], starts, axis=0)


def _distances(x: np.ndarray, centroids: np.ndarray):
    """Two nearest centroids per row: (labels (n,), d1 (n,), d2 (n,)) as distances."""
    k = min(2, len(centroids))
    d2, labels = assign(x, centroids, k)
    d = np.sqrt(d2)
    return labels[:, 0], d[:, 0], d[:, -1] if k == 2 else np.full(len(x), np.inf, np.float32)


def _sums(x: np.ndarray, labels: np.ndarray, k: int):
    sums = np.zeros((k, x.shape[1]), np.float64)
    for start in range(0, len(x), BLOCK):
        _add_rows(sums, labels[start:start + BLOCK], x[start:start + BLOCK])
    return sums, np.bincount(labels, minlength=k)


def lloyd_step(x: np.ndarray, state, centroids: np.ndarray):
    """One assignment step with Hamerly's bounds (Hamerly 2010): exact Lloyd labels, but a
    row whose distance bounds prove its centroid unchanged skips the distance computation.
    state: (labels, upper, lower, sums, counts, centroids of the last step) or None.
    -> (state, (sums (k, d) float64, counts (k,)))."""
    k = len(centroids)
    if state is None:
        labels, upper, lower = _distances(x, centroids)
        sums, counts = _sums(x, labels, k)
        return (labels, upper, lower, sums, counts, centroids), (sums, counts)
    labels, upper, lower, sums, counts, prev = state
    shift = np.sqrt(((centroids - prev) ** 2).sum(1))
    top = np.argsort(shift)[::-1][:2]
    upper = upper + shift[labels]
    # The lower bound drops by the largest shift among the other centroids.
    lower = lower - np.where(labels == top[0], shift[top[-1]], shift[top[0]])
    if k > 1:
        cc = np.sqrt(np.maximum(assign(centroids, centroids, 2)[0][:, 1], 0))
        bound = np.maximum(0.5 * cc[labels], lower)
    else:
        bound = np.full(len(x), np.inf)
    check = np.flatnonzero(upper > bound)
    if len(check):
        exact = np.sqrt(((x[check] - centroids[labels[check]]) ** 2).sum(1))
        upper[check] = exact
        check = check[exact > bound[check]]
    if len(check):
        new, d1, d2 = _distances(x[check], centroids)
        old = labels[check]
        moved = new != old
        upper[check], lower[check] = d1, d2
        labels = labels.copy()
        labels[check] = new
        if moved.any():
            sums = sums.copy()
            rows = x[check[moved]].astype(np.float64)
            _add_rows(sums, old[moved], -rows)
            _add_rows(sums, new[moved], rows)
            counts = counts + np.bincount(new[moved], minlength=k) - \
                np.bincount(old[moved], minlength=k)
    return (labels, upper, lower, sums, counts, centroids), (sums, counts)


def shard_predict(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return assign(x, centroids)[1][:, 0]


def shard_labels(x: np.ndarray, state, centroids: np.ndarray):
    """Final pass: labels against these centroids (one more bounded step) and the exact
    inertia. -> (state, (labels, inertia))."""
    state, _ = lloyd_step(x, state, centroids)
    labels = state[0]
    inertia = 0.0
    for start in range(0, len(x), BLOCK):
        diff = x[start:start + BLOCK] - centroids[labels[start:start + BLOCK]]
        inertia += float(np.einsum("ij,ij->", diff, diff, dtype=np.float64))
    return state, (labels, inertia)


HASHED_COLUMNS = 16    # enough to tell rows apart; hashing every column costs a Lloyd pass


def row_hashes(x: np.ndarray, seed: int) -> np.ndarray:
    """(n, d) -> (n,) uint64 seeded hashes of each row's contents (up to 16 columns)."""
    cols = np.linspace(0, x.shape[1] - 1, min(HASHED_COLUMNS, x.shape[1])).astype(int)
    words = np.ascontiguousarray(x[:, cols], np.float32).view(np.uint32).astype(np.uint64)
    mult = np.random.default_rng(seed).integers(1, 2**63, size=len(cols), dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = (words * (mult | np.uint64(1))).sum(1, dtype=np.uint64)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    return h


def uniform(x: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) draw per row that depends on the row's contents and the seed only, so
    sampling decisions do not depend on how rows are split into shards."""
    return (row_hashes(x, seed) >> np.uint64(11)).astype(np.float64) / float(2**53)


def shard_sample(x: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Rows drawn with probability `fraction`, decided by each row's contents and the seed."""
    return x[uniform(x, seed) < fraction] if fraction < 1 else x


# k-means|| keeps, per shard, the rows it seeds from (all, or a content-hash sample), each
# one's distance to its nearest candidate so far and that candidate's index (the state), so
# each round measures distances to the new candidates only.

def parallel_update(x: np.ndarray, state, candidates: np.ndarray, offset: int,
                    fraction: float = 1.0, seed: int = 0):
    """Fold new candidates (numbered from `offset`) into the state -> (state, shard cost)."""
    if state is None:
        rows = shard_sample(x, fraction, seed)
        state = (rows, np.full(len(rows), np.inf, np.float32), np.zeros(len(rows), np.int64))
    rows, d2, nearest = state
    new_d2, new_nearest = assign(rows, candidates)
    closer = new_d2[:, 0] < d2
    d2 = np.where(closer, new_d2[:, 0], d2)
    nearest = np.where(closer, new_nearest[:, 0] + offset, nearest)
    return (rows, d2, nearest), float(d2.sum(dtype=np.float64))


def parallel_sample(x: np.ndarray, state, ell: float, cost: float, seed: int):
    """Keep each row with probability min(1, ell * d^2 / cost) (Bahmani et al. 2012)."""
    rows, d2, _ = state
    p = np.minimum(1.0, ell * d2.astype(np.float64) / max(cost, 1e-30))
    return state, rows[uniform(rows, seed) < p]


def parallel_weights(x: np.ndarray, state, n_candidates: int):
    """How many of the shard's (seeding) rows each candidate is nearest to."""
    return state, np.bincount(state[2], minlength=n_candidates)


def check_finite(x: np.ndarray) -> None:
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} rows hold NaN or inf, first at row "
                         f"{int(np.flatnonzero(bad)[0])} of its shard")
