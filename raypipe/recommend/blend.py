"""`blend`'s weights, fitted on validation users: the users held out by
`encoder.validation_share` are asked all but their last item for the last one, as the
encoder's early stopping asks them, and the weights with the best NDCG@10 win. The grids
start at 0, so a signal is mixed in only where it helps on validation; with both weights at
0, `blend` is `vector`. Knows nothing about Ray.

What validation sees is what the test would: the users' vectors, segments and
co-occurrence scores come from their history without its last item, and the segment
rankings and co-occurrence counts leave that item out too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.config import RecommendConfig, UserConfig
from raypipe.recommend.metrics import hit_sums
from raypipe.segments.profiles import nearest_segments
from raypipe.recommend.inputs import purchased, segment_rankings
from raypipe.recommend.recommender import Recommender
from raypipe.vectors.pooling import history_rows, history_weights
from raypipe.vectors.users import UserModel

SEGMENT_GRID = (0.0, 0.05, 0.1, 0.2, 0.4)
COOCCURRENCE_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
MAX_USERS = 20_000      # validation users the fit looks at, at most


def fit_share(share: float, n_users: int) -> float:
    """The share of users (by `cooccur.held_rank`) the fit asks: the held-out users
    (`encoder.validation_share`), or a seeded subset of them when they are more than
    MAX_USERS."""
    return share * min(1.0, MAX_USERS / max(share * n_users, 1.0))


@dataclass
class Validation:
    """Validation users' inputs (from their history without its last item) and targets."""
    vectors: np.ndarray             # (n, d) query vectors
    segments: np.ndarray            # (n,) segment of the shortened history
    history: list[np.ndarray]       # catalogue rows, oldest first
    exclude: list[set]
    targets: np.ndarray             # (n,) catalogue row of the last item
    full_segments: np.ndarray       # (n,) segment of the whole history (in the segment mass)
    last_weights: np.ndarray        # (n,) the last item's weight in that mass


def validation_inputs(users: pa.Table, segment_vectors: np.ndarray, catalogue,
                      segmentation, user: UserConfig, exclude_purchased: bool,
                      model: UserModel, embedded: np.ndarray | None = None) -> Validation:
    """Validation users (item_ids, event_types) and the vectors their segments were made
    from -> their inputs, the shortened histories turned into vectors by the run's
    UserModel. `embedded`: the vectors of `model.texts` of the shortened histories, for
    models that need texts (`shortened` gives them)."""
    rows, types = shortened(users, catalogue)
    vectors = model.encode(rows, types, embedded)
    full_rows = history_rows(users["item_ids"], catalogue.index())
    full = nearest_segments(segment_vectors, segmentation)[0]
    last = np.array([w[-1] for w in history_weights(users["event_types"].to_pylist(),
                                                    user)], np.float64)
    return Validation(vectors.query, nearest_segments(vectors.taste, segmentation)[0], rows,
                      purchased(rows, types, exclude_purchased),
                      np.array([r[-1] for r in full_rows], np.int64), full, last)


def shortened(users: pa.Table, catalogue) -> tuple[list[np.ndarray], list[list[str]]]:
    """Validation users -> their histories without the last item: (catalogue rows, event
    types)."""
    rows = history_rows(users["item_ids"], catalogue.index())
    types = users["event_types"].to_pylist()
    return [r[:-1] for r in rows], [t[:-1] for t in types]


def validation_rankings(mass: pa.Table, val: Validation, n_segments: int,
                        depth: int) -> list[tuple]:
    """Segment rankings from the segment item mass without the validation users' last items."""
    minus = pa.table({"segment": pa.array(val.full_segments, pa.int32()),
                      "item_row": pa.array(val.targets, pa.int64()),
                      "weight": pa.array(-val.last_weights, pa.float64())})
    both = pa.concat_tables([mass.select(["segment", "item_row", "weight"])
                             .cast(minus.schema), minus])
    summed = both.group_by(["segment", "item_row"]).aggregate([("weight", "sum")]) \
        .rename_columns(["segment", "item_row", "weight"])
    summed = summed.filter(pc.greater(summed["weight"], 1e-9))
    return segment_rankings(summed, n_segments, depth)


def ndcg_recall(rows: np.ndarray, targets: np.ndarray, k: int = 10) -> tuple[float, float]:
    """(n, >= k) ranked rows and (n,) targets -> (NDCG@k, Recall@k), one target each."""
    hit = rows[:, :k] == targets[:, None]
    ndcg, found = hit_sums(np.where(hit.any(1), hit.argmax(1), k), k)
    return ndcg / max(len(rows), 1), found / max(len(rows), 1)


def fit_weights(rec: Recommender, val: Validation, r: RecommendConfig) -> dict:
    """-> {segment, cooccurrence: the weights; users; valid NDCG@10 and Recall@10 of the
    chosen weights and of `vector` alone; grid}: the best NDCG@10 over the grid (the first,
    i.e. the smaller weights, on ties). A weight set in the config is kept as it is."""
    segment_grid = SEGMENT_GRID if r.blend_segment is None else (r.blend_segment,)
    co_grid = (COOCCURRENCE_GRID if r.blend_cooccurrence is None else
               (r.blend_cooccurrence,)) if rec.followers is not None else (0.0,)
    parts = rec.blend_parts(val.vectors, val.segments, val.exclude, r.k, val.history)
    grid = {}
    for a in segment_grid:
        for b in co_grid:
            grid[(a, b)] = ndcg_recall(rec.blend(parts, a, b, r.k).rows, val.targets)
    best = max(grid, key=lambda w: grid[w][0])
    vector = rec.recommend(val.vectors, val.segments, val.exclude, strategies=("vector",))
    base = ndcg_recall(vector["vector"].rows, val.targets)
    return {"segment": best[0], "cooccurrence": best[1], "users": len(val.targets),
            "valid_ndcg@10": round(grid[best][0], 5), "valid_recall@10": round(grid[best][1], 5),
            "vector_valid_ndcg@10": round(base[0], 5),
            "vector_valid_recall@10": round(base[1], 5),
            "grid": [{"segment": a, "cooccurrence": b, "valid_ndcg@10": round(v[0], 5)}
                     for (a, b), v in grid.items()]}
