"""Attribution: which history items support a recommended item's score, and how much, for
each strategy, from the evidence the strategy scored with (at most TOP items, best first,
with their weights). Knows nothing about Ray; recommend/explain.py turns it into reasons.

- `vector`, pooled users (`recent_item`): the query is the normalised weighted sum S of
  the history's item vectors, so the score the item would have without history item i is
  (S.e - u_i.e) / |S - u_i| (u_i = w_i v_i): exact occlusion in closed form, from dot
  products alone. The weights are those score drops.
- `vector`, encoder users (`recent_item`): occlusion, where `Evidence.occlusion` holds it:
  the query minus the query with one of the last events left out, for each of them; the
  score drop of item e is e . (q - q_without_i), exact for that removal. Without it (the
  default for the encoder: it costs a forward pass per event explained), no evidence.
- `blend`: the component (vector, segment or co-occurrence, each with its weight) that adds
  most to the item's score gives the reason, and that component's evidence.
- co-occurrence (`bought_together`): the co-occurrence score of item e is the sum over the
  user's latest events j of 0.5^j count(j -> e), scaled; each event's term is its weight.
- `segment`: the user's segment; the evidence is the user's own items closest to the
  segment's centroid, weighted by their history weight times that closeness.
- `multi` (`interest`): the interest whose query scores the item best; its items of that
  interest, weighted as in that query.
"""
from __future__ import annotations

import dataclasses

import numpy as np

REASONS = ("recent_item", "bought_together", "segment", "interest")
TOP = 3                  # history items cited per recommendation, at most
# support below this is rounding (e.g. an event 40 back at a query half-life of 1 moves a
# score by ~1e-12): not cited, so the batch and the service (other rounding) agree
MIN_WEIGHT = 1e-9


@dataclasses.dataclass
class Evidence:
    """A batch of users' inputs to the explanations."""
    history: list[np.ndarray]              # catalogue rows, oldest first
    query_weights: list[np.ndarray] | None  # pooled: each event's weight in the query
    taste_weights: list[np.ndarray]        # each event's long-term (profile) weight
    segments: np.ndarray                   # (n,) the user's segment
    centroids: np.ndarray | None = None    # (n_segments, d) in the item space, for `segment`
    occlusion: np.ndarray | None = None    # (n, m, d): encoder, the last m events
    interest_segments: list[list[int]] | None = None   # multi: each interest's segment
    interest_queries: np.ndarray | None = None         # multi: (n, top, d)
    item_segment: np.ndarray | None = None
    recent_weights: list[np.ndarray] | None = None     # multi: each event's query weight
    # the vectors history rows index: the catalogue's, plus items new to the service
    space: np.ndarray | None = None
    # pooled: the recency half-lives of the query and taste weights (exact occlusion makes
    # the events older than a removed item younger; None: the weights stay), and the
    # segmentation (blend's
    # segment drop: which segment the taste without an item falls in)
    query_half_life: float | None = None
    taste_half_life: float | None = None
    segmentation: object | None = None

    def vectors(self, item_vectors: np.ndarray) -> np.ndarray:
        return item_vectors if self.space is None else self.space


@dataclasses.dataclass
class Explained:
    """One strategy's explanations, (n, k) like its Ranked: reason codes (index in
    REASONS), cited catalogue rows (n, k, TOP; -1 padding) and their weights."""
    reason: np.ndarray
    because: np.ndarray
    weights: np.ndarray

    def prefix(self, k: int) -> "Explained":
        return Explained(self.reason[:, :k], self.because[:, :k], self.weights[:, :k])

    @classmethod
    def empty(cls, n: int, k: int, reason: str) -> "Explained":
        return cls(np.full((n, k), REASONS.index(reason), np.int8),
                   np.full((n, k, TOP), -1, np.int64), np.zeros((n, k, TOP), np.float32))


def _top(contrib: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, k) contributions of m distinct history items to k items -> their TOP best
    positive supporters per item: (k, TOP) rows (-1 padding) and weights."""
    rows, weights = best(contrib[None].astype(np.float64), np.asarray(items)[None])
    return rows[0], weights[0]


def _distinct(rows: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """History rows and per-event weights -> distinct rows and their summed weights."""
    items, inverse = np.unique(np.asarray(rows, np.int64), return_inverse=True)
    return items, np.bincount(inverse, weights=weights, minlength=len(items))


def _pairs(history: list[np.ndarray], weights: list[np.ndarray], users: np.ndarray,
           n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (user, history row) pairs of `users`, user-major, with summed weights:
    -> (user index into `users`' order, row, weight)."""
    lengths = np.array([len(history[u]) for u in users], np.int64)
    if not lengths.sum():
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    local = np.repeat(np.arange(len(users)), lengths)
    rows = np.concatenate([np.asarray(history[u], np.int64) for u in users])
    w = np.concatenate([np.asarray(weights[u], np.float64) for u in users])
    key, inverse = np.unique(local * n_rows + rows, return_inverse=True)
    return key // n_rows, key % n_rows, np.bincount(inverse, weights=w, minlength=len(key))


def best(share: np.ndarray, cited: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(b, L, k) each of b users' L items' shares of k scores, (b, L) the items -> the TOP
    best positive per score: (b, k, TOP) rows (-1 padding) and weights."""
    t = min(TOP, share.shape[1])
    order = np.argsort(-share, axis=1, kind="stable")[:, :t]              # (b, t, k)
    best = np.take_along_axis(share, order, axis=1)
    rows = np.take_along_axis(np.broadcast_to(cited[:, :, None], share.shape), order, axis=1)
    keep = best > MIN_WEIGHT
    b, _, k = share.shape
    out_rows, out_weights = np.full((b, k, TOP), -1, np.int64), np.zeros((b, k, TOP), np.float32)
    out_rows[:, :, :t] = np.where(keep, rows, -1).transpose(0, 2, 1)
    out_weights[:, :, :t] = np.where(keep, best, 0).transpose(0, 2, 1)
    return out_rows, out_weights


def occluded_vector(rec_rows: np.ndarray, ev: Evidence, item_vectors: np.ndarray) -> Explained:
    """`vector` for encoder queries: the score drop when each of the last events is left
    out (`ev.occlusion`, the query differences); without it, the reason alone."""
    n, k = rec_rows.shape
    out = Explained.empty(n, k, "recent_item")
    if ev.occlusion is None:
        return out
    m = ev.occlusion.shape[1]
    for u in range(n):
        hist = np.asarray(ev.history[u], np.int64)[-m:]
        if not len(hist) or not (rec_rows[u] >= 0).any():
            continue
        drops = ev.occlusion[u, m - len(hist):].astype(np.float64) @ \
            item_vectors[np.maximum(rec_rows[u], 0)].T.astype(np.float64)
        items, inverse = np.unique(hist, return_inverse=True)
        contrib = np.zeros((len(items), k))
        np.add.at(contrib, inverse, drops)
        out.because[u], out.weights[u] = _top(contrib, items)
        out.because[u][rec_rows[u] < 0] = -1
    return out


def cooccurrence(rec_rows: np.ndarray, ev: Evidence, followers, recent: int) -> Explained:
    """`bought_together`: each of the user's latest events' term in the item's
    co-occurrence score (0.5^j times the count of that event's item followed by it),
    as shares of the item's score."""
    n, k = rec_rows.shape
    out = Explained.empty(n, k, "bought_together")
    if followers is None or not n:
        return out
    latest = np.full((n, recent), -1, np.int64)
    for u, h in enumerate(ev.history):
        h = np.asarray(h, np.int64)[::-1][:recent]
        latest[u, :len(h)] = h
    known = (latest >= 0) & (latest < followers.n_items)
    # an item among the latest twice counts once, with both terms
    dup = np.zeros_like(known)
    for j in range(1, recent):
        dup[:, j] = (latest[:, :j] == latest[:, j:j + 1]).any(1)
    decay = np.where(known, 0.5 ** np.arange(recent), 0.0)
    keys = followers.src * followers.n_items + followers.dst              # sorted
    want = (np.maximum(latest, 0)[:, :, None] * followers.n_items
            + np.maximum(rec_rows, 0)[:, None, :])                         # (n, recent, k)
    at = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
    hit = (keys[at] == want) if len(keys) else np.zeros(want.shape, bool)
    term = np.where(hit, followers.count[at], 0) * decay[:, :, None]
    for j in range(1, recent):         # a repeat's term joins its first occurrence
        first = np.argmax(latest[:, :j + 1] == latest[:, j:j + 1], axis=1)
        move = dup[:, j]
        np.add.at(term, (np.flatnonzero(move), first[move]), term[move, j])
        term[move, j] = 0
    share = term / np.maximum(term.sum(1, keepdims=True), 1e-12)          # (n, recent, k)
    out.because[:], out.weights[:] = best(share, latest)
    out.because[rec_rows < 0] = -1
    out.weights[rec_rows < 0] = 0
    return out


def segment(rec_rows: np.ndarray, ev: Evidence, item_vectors: np.ndarray) -> Explained:
    """`segment`: the user's own items closest to its segment's centroid (history weight
    times closeness), the same for each item of the list."""
    n, k = rec_rows.shape
    out, space = Explained.empty(n, k, "segment"), ev.vectors(item_vectors)
    if ev.centroids is None or not n:
        return out
    pu, items, w = _pairs(ev.history, ev.taste_weights, np.arange(n), len(space))
    if len(pu):
        uniq, at = np.unique(items, return_inverse=True)
        close = (space[uniq].astype(np.float64) @ ev.centroids.T.astype(np.float64))[
            at, ev.segments[pu]]                                      # (P,)
        pos = np.arange(len(pu)) - np.searchsorted(pu, pu)
        pull = np.full((n, pos.max() + 1, 1), -np.inf)
        pull[pu, pos, 0] = w * close
        cited = np.full(pull.shape[:2], -1, np.int64)
        cited[pu, pos] = items
        out.because[:], out.weights[:] = best(pull, cited)       # (n, 1, TOP) to k
    out.because[rec_rows < 0] = -1
    out.weights[rec_rows < 0] = 0
    return out


def interest(rec_rows: np.ndarray, ev: Evidence, item_vectors: np.ndarray) -> Explained:
    """`interest` (multi): per item the interest whose query scores it best, and the
    user's items of that interest by their share of that query's score."""
    n, k = rec_rows.shape
    out, space = Explained.empty(n, k, "interest"), ev.vectors(item_vectors)
    if ev.interest_queries is None:
        return out
    for u in range(n):
        segs = ev.interest_segments[u]
        valid = rec_rows[u] >= 0
        if not segs or not valid.any():
            continue
        e = item_vectors[np.maximum(rec_rows[u], 0)].astype(np.float64)
        source = np.argmax(ev.interest_queries[u, :len(segs)] @ e.T, axis=0)   # (k,)
        hist = np.asarray(ev.history[u], np.int64)
        for t in np.unique(source):
            mine = ev.item_segment[hist] == segs[t]
            items, w = _distinct(hist[mine], ev.recent_weights[u][mine])
            cols = np.flatnonzero((source == t) & valid)
            if len(items):
                vecs = space[items] * w[:, None]                    # float64
                contrib = vecs @ e[cols].T / max(np.linalg.norm(vecs.sum(0)), 1e-12)
                out.because[u][cols], out.weights[u][cols] = _top(contrib, items)
    return out


def blend(components: dict, choose: np.ndarray) -> Explained:
    """`blend`: `choose` (n, k) the index of the component (0 vector, 1 segment, 2
    co-occurrence) that adds most to each item; `components` those three Explained."""
    reasons = [components[c] for c in ("vector", "segment", "cooccurrence")]
    n, k = choose.shape
    out = Explained.empty(n, k, "recent_item")
    for j, exp in enumerate(reasons):
        pick = choose == j
        out.reason[pick] = exp.reason[pick]
        out.because[pick], out.weights[pick] = exp.because[pick], exp.weights[pick]
    return out


def blend_choice(parts, rows: np.ndarray, weights: tuple[float, float]) -> np.ndarray:
    """(n, k) blend rows -> which component (0 vector, 1 segment, 2 co-occurrence) adds most
    to each one's score, read from blend's candidates (`parts`, rows sorted per user)."""
    n, k = rows.shape
    if parts is None or not n:
        return np.zeros((n, k), np.int64)
    width = int(max(parts.rows.max(initial=0), rows.max(initial=0))) + 2
    base = np.arange(n, dtype=np.int64)[:, None] * width
    keys = parts.rows + 1 + base      # sorted within rows; a repeat's first copy is valid
    flat = keys.ravel()
    at = np.searchsorted(flat, (np.maximum(rows, 0) + 1 + base).ravel()).reshape(n, k)
    at = np.minimum(at, flat.size - 1)
    u = np.repeat(np.arange(n), k).reshape(n, k)
    col = at - u * parts.rows.shape[1]
    terms = np.stack([parts.vector[u, col], weights[0] * parts.segment[u, col],
                      weights[1] * parts.cooccurrence[u, col]], axis=-1)
    return np.argmax(terms, axis=-1)
