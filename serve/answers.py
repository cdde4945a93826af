"""Known users' answers as the batch job ranked and explained them, held compactly in
memory, so a GET for a known user reads its rows of recommendations.parquet instead of
ranking and explaining again.

The service would compute the very same rows: it ranks and explains as the batch job does,
and an answer for k <= `recommend.k` items is the prefix of the batch's k (Recommender.
recommend). tests/serve/test_answers.py checks that every strategy's stored answer equals the
computed one. So this changes the cost, not the answer: the response is still built by
`Recommender.to_table` (sentences included) from arrays, about 0.4 ms here against 3-6 ms
for ranking and explaining a user again. Knows nothing about Ray or HTTP.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from raypipe.recommend.attribution import REASONS, TOP, Explained
from raypipe.recommend.ranking import Ranked

# 33 bytes per row (item, score, reason, the cited items and their weights): the default
# ceiling of 20 million rows is about 660 MB per replica. Larger runs are answered
# by computing each request.
MAX_ROWS = 20_000_000


class Answers:
    """recommendations.parquet as arrays: user u's `strategy` rows are
    rows[start:stop] with (start, stop) = spans[u, strategy], (-1, -1) where the table
    has none (such requests are computed)."""

    def __init__(self, table: pa.Table, user_index: pd.Index, item_index: pd.Index,
                 strategies: tuple):
        users = user_index.get_indexer(table["user_id"].to_numpy(zero_copy_only=False))
        strategy = pd.Index(list(strategies)).get_indexer(
            table["strategy"].to_numpy(zero_copy_only=False))
        rank = table["rank"].to_numpy()
        keep = np.flatnonzero((users >= 0) & (strategy >= 0))
        order = keep[np.lexsort((rank[keep], strategy[keep], users[keep]))]
        table = table.take(pa.array(order))
        self.strategies = {s: j for j, s in enumerate(strategies)}
        self.rows = item_index.get_indexer(
            table["item_id"].to_numpy(zero_copy_only=False)).astype(np.int32)
        if (self.rows < 0).any():
            raise ValueError("recommendations.parquet names items outside the catalogue")
        self.scores = table["score"].to_numpy().astype(np.float32)
        self.spans = np.full((len(user_index), len(strategies), 2), -1, np.int64)
        key = users[order] * len(strategies) + strategy[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else key
        ends = np.r_[starts[1:], len(key)]
        self.spans.reshape(-1, 2)[key[starts]] = np.stack([starts, ends], 1)
        self.explained = "reason" in table.column_names
        if self.explained:
            self.reason = pd.Index(REASONS).get_indexer(
                table["reason"].to_numpy(zero_copy_only=False)).astype(np.int8)
            self.because, self.weights = _padded(table["because"], item_index), \
                _padded(table["because_weights"], None)

    @classmethod
    def load(cls, folder, manifest: dict, user_index: pd.Index, item_index: pd.Index,
             recommend, max_rows: int = MAX_ROWS) -> "Answers | None":
        """The run's table, or None where it has none or more than `max_rows` rows."""
        rows = manifest["tables"].get("recommendations", -1)
        if not 0 <= rows <= max_rows:
            return None
        columns = ["user_id", "strategy", "rank", "item_id", "score"]
        if recommend.explain:        # not the sentences: they are built again from these
            columns += ["reason", "because", "because_weights"]
        return cls(folder.read("recommendations", columns), user_index, item_index,
                   tuple(recommend.strategies))

    def get(self, user: int, strategy: str, k: int):
        """-> ({strategy: Ranked}, {strategy: Explained} or None) for the user's first k
        rows, or None when the table holds no answer for them."""
        start, stop = self.spans[user, self.strategies[strategy]]
        if start < 0:
            return None
        at = slice(start, min(stop, start + k))
        ranked = {strategy: Ranked(self.rows[None, at], self.scores[None, at])}
        if not self.explained:
            return ranked, None
        return ranked, {strategy: Explained(self.reason[None, at], self.because[None, at],
                                            self.weights[None, at])}


def _padded(lists: pa.ChunkedArray, item_index: pd.Index | None) -> np.ndarray:
    """A list column (at most TOP per row) -> (n, TOP): catalogue rows (-1 padding) with
    `item_index`, else float32 weights (0 padding)."""
    lists = lists.combine_chunks()
    sizes = np.diff(lists.offsets.to_numpy())
    flat = lists.flatten().to_numpy(zero_copy_only=False)
    if item_index is not None:
        flat = item_index.get_indexer(flat)
        out = np.full((len(sizes), TOP), -1, np.int32)
    else:
        out = np.zeros((len(sizes), TOP), np.float32)
    row = np.repeat(np.arange(len(sizes)), sizes)
    out[row, np.arange(len(flat)) - np.repeat(np.cumsum(sizes) - sizes, sizes)] = flat
    return out
