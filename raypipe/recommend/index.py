"""The item index `vector` retrieval searches: exact (flat) inner product, or IVF for large
catalogues, with its recall against exact search. Knows nothing about Ray."""
from __future__ import annotations

import faiss
import numpy as np

from raypipe.config import RecommendConfig


def build_index(vectors: np.ndarray, cfg: RecommendConfig) -> faiss.Index:
    """Inner-product index over the item vectors: exact (flat) for catalogues below
    `cfg.ivf_min_items`, an inverted-file index (IVF, `cfg.ivf_probe` of its lists searched)
    above, or as `cfg.index` says. IVF's clustering is seeded, so the batch job and the
    service build the same index from the same vectors."""
    n, d = vectors.shape
    kind = cfg.index if cfg.index != "auto" else \
        ("ivf" if n >= cfg.ivf_min_items else "flat")
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
        index.add(vectors)
        return index
    lists = cfg.ivf_lists or int(4 * np.sqrt(n))
    lists = max(1, min(lists, n // 39))     # faiss wants >= 39 training points per list
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 1234
    index.train(vectors)
    index.add(vectors)
    index.nprobe = min(cfg.ivf_probe, lists)
    return index


def index_info(index: faiss.Index) -> dict:
    if isinstance(index, faiss.IndexIVF):
        return {"kind": "ivf", "lists": int(index.nlist), "probe": int(index.nprobe)}
    return {"kind": "flat"}


def index_recall(index: faiss.Index, item_vectors: np.ndarray, queries: np.ndarray,
                 k: int) -> float:
    """Share of the exact top-k items (inner product over the whole catalogue) that the
    index finds: 1.0 for the flat index, measured for IVF."""
    if not isinstance(index, faiss.IndexIVF) or len(queries) == 0:
        return 1.0
    k = min(k, len(item_vectors))
    queries = np.ascontiguousarray(queries, np.float32)
    exact = faiss.IndexFlatIP(item_vectors.shape[1])
    exact.add(item_vectors)
    _, truth = exact.search(queries, k)
    _, found = index.search(queries, k)
    hits = sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found))
    return hits / truth.size
