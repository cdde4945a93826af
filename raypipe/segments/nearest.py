"""Nearest centroids, block by block, near the cores' matrix-product rate.

Knows nothing about Ray. One block of rows costs one float32 matrix product, c.x as a
(k x rows) matrix, and one compiled pass over it while it is still in cache
(kernels.two_nearest): the nearest centroid, the smallest and, for Hamerly's lower bound,
the second-smallest squared distance. Top-k for more than one (`assign`) takes the
(rows x k) product of rows with a ones column and [-2c; |c|^2]. On CPU the blocks are
spread over a thread pool as large as the BLAS's own thread count, each block's product
single-threaded, so the passes run on every core too (numpy and the compiled pass release
the GIL); inside a Ray task (OMP_NUM_THREADS=1) that is one thread. With a GPU, torch does
the same.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from raypipe.segments import kernels

BLOCK = 1024           # rows per block: (BLOCK x k) floats stay in cache for the reductions


@functools.lru_cache(maxsize=1)
def use_gpu() -> bool:
    """CUDA visible to this process? torch is imported only where a GPU may exist, so CPU
    workers start without paying its import."""
    if not os.path.exists("/dev/nvidiactl") or os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return False
    import torch
    return torch.cuda.is_available()


class Centroids:
    """Centroids prepared once per step: `aug_t` = [-2c; |c|^2] as a (d + 1, k) matrix, so a
    block's rows with a column of ones appended give |c|^2 - 2 x.c in one product (the
    broadcast add it saves costs as much as the copy that appends the ones)."""

    def __init__(self, centroids: np.ndarray):
        self.c = np.ascontiguousarray(centroids, np.float32)
        self.sq = np.einsum("ij,ij->i", self.c, self.c)
        self.aug_t = np.ascontiguousarray(np.vstack([-2.0 * self.c.T, self.sq[None]]),
                                          np.float32)

    def __len__(self) -> int:
        return len(self.c)

    def subset(self, which: np.ndarray) -> "Centroids":
        sub = object.__new__(Centroids)
        sub.c, sub.sq = self.c[which], self.sq[which]
        sub.aug_t = np.ascontiguousarray(self.aug_t[:, which])
        return sub


_local = threading.local()


def _buffer(name: str, n: int) -> np.ndarray:
    """This thread's reused float32 buffer `name`, its first n floats. A fresh 1 MB array
    per block costs page faults worth a third of the product."""
    buf = getattr(_local, name, None)
    if buf is None or buf.size < n:
        buf = np.empty(max(n, BLOCK * 512), np.float32)
        setattr(_local, name, buf)
    return buf[:n]


def _scratch(b: int, d: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with a ones column (b, d + 1) and the product (b, k), in this thread's buffers."""
    aug = _buffer("aug", b * (d + 1)).reshape(b, d + 1)
    aug[:, d] = 1.0
    return aug, _buffer("product", b * k).reshape(b, k)


def row_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def half_distances(xb: np.ndarray, cents: Centroids) -> np.ndarray:
    """|c|^2 - 2 x.c for a block, (b, k), in this thread's scratch buffer."""
    b, dim = xb.shape
    k = len(cents)
    if k > dim:
        aug, d = _scratch(b, dim, k)
        aug[:, :dim] = xb
        return np.matmul(aug, cents.aug_t, out=d)
    d = np.matmul(xb, cents.aug_t[:dim], out=_scratch(b, dim, k)[1])
    d += cents.sq
    return d


def dots(xb: np.ndarray, c: np.ndarray) -> np.ndarray:
    """c.x for a block of rows and (k, d) centroids, as a (k, b) matrix in this thread's
    product buffer."""
    k, b = len(c), len(xb)
    return np.matmul(c, xb.T, out=_buffer("product", b * k).reshape(k, b))


def block_nearest(xb: np.ndarray, cents: Centroids, second: bool,
                  x_sq: np.ndarray | None = None, first: bool = False):
    """One block -> (labels (b,), squared distance to the nearest (b,), to the second nearest
    (b,), inf when k = 1, or None when `second` is False), plus the squared distance to
    centroid 0 when `first`. x_sq: the rows' |x|^2 if known. One product (k, b) and one
    compiled pass over it (kernels.two_nearest)."""
    b = len(xb)
    xb = np.ascontiguousarray(xb, np.float32)
    x_sq = row_norms(xb) if x_sq is None else np.asarray(x_sq, np.float32)
    labels = np.empty(b, np.int64)
    near, far, to_first = (np.empty(b, np.float32) for _ in range(3))
    kernels.two_nearest(dots(xb, cents.c), cents.sq, x_sq, labels, near, far, to_first)
    out = (labels, near, far if second else None)
    return out + (to_first,) if first else out


def block_rows(k: int) -> int:
    """Rows per block for k centroids: about BLOCK x 256 products (1 MB), so few centroids
    get larger blocks and fewer numpy calls per row (each holds the GIL a moment)."""
    return int(min(8 * BLOCK, max(BLOCK, BLOCK * 256 // max(k, 1))))


def blocks(n: int, size: int = BLOCK) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


@functools.lru_cache(maxsize=1)
def _controller():
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


_THREADS = contextvars.ContextVar("raypipe_kmeans_threads", default=0)


def threads() -> int:
    """How many cores this process may use for one shard: the BLAS's own thread count (1 in
    a Ray task with one CPU, every core in a plain process), or the count `own_cores` saw."""
    if _THREADS.get():
        return _THREADS.get()
    info = [lib["num_threads"] for lib in _controller().info() if lib["user_api"] == "blas"]
    return max(1, min(info or [os.cpu_count() or 1]))


@contextlib.contextmanager
def own_cores():
    """For a whole fit: the BLAS single-threaded, its cores left to parallel_map's threads.
    A multi-threaded BLAS call from this thread (a small product between two maps) leaves
    OpenBLAS's workers spinning for a while after it (OPENBLAS_THREAD_TIMEOUT), and they
    took a core from the next map's threads: a 64-centroid, 384-wide step ran 1.7x slower
    than with the BLAS kept to one thread. The limit is the process's (as threadpoolctl's
    are); parallel_map keeps the thread count from before it."""
    n = threads()
    if n <= 1:
        yield
        return
    token = _THREADS.set(n)
    try:
        with _controller().limit(limits=1, user_api="blas"):
            yield
    finally:
        _THREADS.reset(token)


@functools.lru_cache(maxsize=4)
def _pool(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(n, thread_name_prefix="raypipe-kmeans")


def parallel_blocks(fn, n_rows: int, size: int = BLOCK) -> list:
    """[fn(slice) for each block of `n_rows`], in order, on `threads()` threads."""
    return parallel_map(fn, blocks(n_rows, size))


def parallel_map(fn, parts: list) -> list:
    """[fn(part) for part in parts], in order. With `threads()` > 1, that many threads take
    the next part as they finish one (parts differ in size: whole blocks, gathered rows,
    candidate groups), with single-threaded BLAS inside. fn must write disjoint rows only,
    and should do little besides numpy calls that release the GIL (small ones hold it, and
    the threads then wait for each other)."""
    n = min(threads(), len(parts))
    if n <= 1:
        return [fn(p) for p in parts]
    out = [None] * len(parts)
    turn = itertools.count()            # next() on a count is atomic under the GIL

    def worker(_):
        while (i := next(turn)) < len(parts):
            out[i] = fn(parts[i])

    with _controller().limit(limits=1, user_api="blas"):
        list(_pool(n).map(worker, range(n)))
    return out


def nearest2(x: np.ndarray, centroids: np.ndarray, second: bool = True):
    """All rows -> (labels (n,), squared distances to the nearest (n,), to the second (n,))."""
    if use_gpu():
        d2, lab = _topk_torch(x, centroids, min(2, len(centroids)))
        far = d2[:, 1] if d2.shape[1] > 1 else np.full(len(x), np.inf, np.float32)
        return lab[:, 0], d2[:, 0], far
    cents = Centroids(centroids)
    labels = np.empty(len(x), np.int64)
    near = np.empty(len(x), np.float32)
    far = np.empty(len(x), np.float32) if second else None

    def one(rows: slice):
        lab, d1, d2 = block_nearest(np.ascontiguousarray(x[rows], np.float32), cents, second)
        labels[rows], near[rows] = lab, d1
        if second:
            far[rows] = d2

    parallel_blocks(one, len(x), block_rows(len(centroids)))
    return labels, near, far


def assign(x: np.ndarray, centroids: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """x: (n, d), centroids: (c, d) -> (squared distances (n, k), labels (n, k)), nearest first."""
    if x.shape[1] != centroids.shape[1]:
        raise ValueError(f"dimension mismatch: x has d={x.shape[1]}, centroids "
                         f"d={centroids.shape[1]}")
    k = min(k, len(centroids))
    if use_gpu():
        return _topk_torch(x, centroids, k)
    if k == 1:
        labels, near, _ = nearest2(x, centroids, second=False)
        return near[:, None], labels[:, None]
    cents = Centroids(centroids)
    d2 = np.empty((len(x), k), np.float32)
    labels = np.empty((len(x), k), np.int64)

    def one(rows: slice):
        xb = np.ascontiguousarray(x[rows], np.float32)
        d = half_distances(xb, cents)
        lab = np.argpartition(d, k - 1, axis=1)[:, :k]
        lab = np.take_along_axis(lab, np.take_along_axis(d, lab, 1).argsort(1), 1)
        d2[rows] = np.maximum(np.take_along_axis(d, lab, 1) +
                              np.einsum("ij,ij->i", xb, xb)[:, None], 0)
        labels[rows] = lab

    parallel_blocks(one, len(x), block_rows(len(centroids)))
    return d2, labels


def _topk_torch(x: np.ndarray, centroids: np.ndarray, k: int):
    import torch
    dev = torch.device("cuda")
    c = torch.from_numpy(np.ascontiguousarray(centroids, np.float32)).to(dev)
    c_sq = (c * c).sum(1)
    d2 = np.empty((len(x), k), np.float32)
    labels = np.empty((len(x), k), np.int64)
    for rows in blocks(len(x), 8 * BLOCK):
        xb = torch.from_numpy(np.ascontiguousarray(x[rows], np.float32)).to(dev)
        d = torch.addmm(c_sq.unsqueeze(0), xb, c.T, alpha=-2.0)
        best, lab = torch.topk(d, k, dim=1, largest=False)
        best += (xb * xb).sum(1, keepdim=True)
        d2[rows], labels[rows] = best.clamp_(min=0).cpu().numpy(), lab.cpu().numpy()
    return d2, labels
