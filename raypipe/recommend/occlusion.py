"""Exact occlusion for pooled users: which history items support each recommendation, from
the score it would have if one of the user's distinct history items (every event of it)
left the history, for a batch of users in one pass, without re-encoding anyone
(shortened.py computes those scores). Knows nothing about Ray.

- `vector`: the query (recommend.query_half_life) without i -> its score's drop.
- segment (blend): the taste (user.half_life) without i, its nearest segment; where that
  changes, the item's segment score drops by what the old segment gave it minus the new.
- co-occurrence (blend): only the items among the latest `cooccurrence_recent` events move
  it; for each, the shortened history's scores (scaled as blend scales them).
"""
from __future__ import annotations

import numpy as np
from raypipe.recommend.attribution import REASONS, Evidence, Explained, best
from raypipe.recommend.shortened import GRAM_MAX, Histories, Shortened, shortened

ROWS = 512     # (user, distinct item) rows per padded block, at most
COMPONENTS = ("recent_item", "segment", "bought_together")      # blend_choice's order


def pooled(rec, lists: dict[str, np.ndarray], ev: Evidence, choose: np.ndarray | None = None
           ) -> dict[str, Explained]:
    """`vector` and `blend` lists (rows (n, k) each, either may be absent) of pooled users
    -> their Explained, from one pass of exact occlusion over the users' histories.

    `vector` cites the items whose removal lowers the query score most. `blend` gives the
    reason of the component adding most to each item (`choose`, blend_choice's) and cites,
    among the items that support that component (its own score drops without them; for
    the segment, they pull the taste towards its centre), those whose removal lowers the
    blended score most (vector, segment and co-occurrence drops at blend's weights). The
    weights are those drops."""
    names = list(lists)
    rows = np.concatenate([lists[s] for s in names], axis=1)
    at = np.cumsum([0] + [lists[s].shape[1] for s in names])
    n = len(rows)
    out = {s: Explained.empty(n, lists[s].shape[1], "recent_item") for s in names}
    blended = "blend" in lists
    if blended:
        codes = np.array([REASONS.index(r) for r in COMPONENTS], np.int8)
        out["blend"].reason[:] = codes[choose]
        a, b = rec.blend_weights
        co = cooccurrence_drops(rec, ev, lists["blend"]) if b else None
    space = ev.vectors(rec.item_vectors)
    with_taste = blended and a and ev.segmentation is not None
    weightings = [(ev.query_weights, ev.query_half_life)]
    if with_taste:
        weightings.append((ev.taste_weights, ev.taste_half_life))
    hist = Histories(ev.history, weightings)
    if blended:
        lo, hi = at[names.index("blend")], at[names.index("blend") + 1]
    for users in _chunks(hist.lengths):
        own = ev.centroids[ev.segments[users]] if blended and ev.centroids is not None \
            else None
        got = shortened(hist, users, space, rec.item_vectors, rows[users],
                        ev.segmentation.leaves if with_taste else None, own)
        cited, drops = got.cited, got.drops
        if blended:
            co_drop = _spread(co, users, cited) if co is not None else 0.0
            seg = segment_drops(rec, ev, users, got, rows[users, lo:hi]) if with_taste else 0.0
            pull = got.closeness if own is not None else np.zeros(cited.shape)
            drops[:, :, lo:hi] = _blended(drops[:, :, lo:hi], a * seg + b * co_drop, co_drop,
                                          choose[users], pull, cited)
        because, weights = best(drops.astype(np.float32), cited)
        for name, a0, a1 in zip(names, at[:-1], at[1:]):
            out[name].because[users], out[name].weights[users] = \
                because[:, a0:a1], weights[:, a0:a1]
    for name in names:
        out[name].because[lists[name] < 0] = -1
        out[name].weights[lists[name] < 0] = 0
    return out


def _blended(vec, rest, co_drop, choose, pull, cited) -> np.ndarray:
    """(b, L, k) blend drops (vector + `rest`), -inf where an item does not support the
    reason's component (vector 0, segment 1, co-occurrence 2: `choose`)."""
    pick = choose[:, None, :]
    support = np.where(pick == 0, vec > 0, np.where(pick == 2, np.greater(co_drop, 0),
                                                    (pull > 0)[:, :, None]))
    return np.where(support & (cited >= 0)[:, :, None], vec + rest, -np.inf)


def _chunks(lengths: np.ndarray):
    """Users sorted by history length, in blocks of at most ROWS padded rows (little
    padding); a block never mixes histories over and under GRAM_MAX, so a user's drops
    take the same way in the batch as in the service."""
    by_length = np.argsort(lengths, kind="stable")
    ordered = lengths[by_length]
    s = 0
    while s < len(by_length):
        limit = len(by_length) if ordered[s] > GRAM_MAX else \
            int(np.searchsorted(ordered, GRAM_MAX, side="right"))
        limit = min(limit, s + ROWS)
        fits = np.arange(1, limit - s + 1) * np.maximum(ordered[s:limit], 1) <= ROWS
        e = s + max(int(np.argmin(fits)) if not fits.all() else len(fits), 1)
        yield by_length[s:e]
        s = e


def segment_drops(rec, ev: Evidence, users, got: Shortened, rows: np.ndarray) -> np.ndarray:
    """(b, L, k) how much each item's segment score (blend's, before its weight) drops
    without each cited row: non-zero only where the taste without it falls in another
    segment."""
    out = np.zeros(got.cited.shape + (rows.shape[1],))
    now = np.broadcast_to(ev.segments[users][:, None], got.cited.shape)
    seg = np.where(got.nearest >= 0, ev.segmentation.leaf_segments[got.nearest], now)
    moved = np.nonzero((seg != now) & (got.cited >= 0))
    if len(moved[0]):
        want = rows[moved[0]]
        out[moved] = rec.segment_score(now[moved], want) - rec.segment_score(seg[moved], want)
    return out


def cooccurrence_drops(rec, ev: Evidence, rows: np.ndarray):
    """How much each item's co-occurrence score (scaled, before blend's weight) drops
    without each of its user's latest items (the others do not move it): -> (user (V,),
    history row (V,), drops (V, k)), user-major, rows ascending. Each tail item's counts
    towards its user's items are looked up once; every variant is a weighting of them."""
    followers, recent = rec.followers, rec.cfg.cooccurrence_recent
    if followers is None:
        return None
    users, removed, tail, weights = _variants(ev.history, recent)
    if not len(users):
        return users, removed, np.zeros((0, rows.shape[1]))
    latest = np.where(tail[:, -recent:] >= 0, 0.5 ** np.arange(recent)[::-1], 0.0)
    used = tail >= 0
    used[:, :-recent] = False
    v, at = np.nonzero(weights)
    used[users[v], at] = True
    uu, aa = np.nonzero(used)
    counts = np.zeros(tail.shape + rows.shape[1:])
    counts[uu, aa] = followers.counts(tail[uu, aa], rows[uu])
    before = np.einsum("nw,nwk->nk", latest, counts[:, -recent:]) / followers.row_max(
        *_entries(tail[:, -recent:], latest), len(tail))[:, None]
    now = np.einsum("vw,vwk->vk", weights, counts[users]) / followers.row_max(
        *_entries(tail[users], weights), len(users))[:, None]
    short = _unfilled(ev.history, users, weights, recent, tail.shape[1])
    if len(short):
        rests = [np.asarray(h, np.int64)[np.asarray(h) != r][::-1][:recent]
                 for h, r in zip((ev.history[u] for u in users[short]), removed[short])]
        sizes = np.array([len(r) for r in rests], np.int64)
        back = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        now[short] = followers.scores_at(np.repeat(np.arange(len(short)), sizes),
                                         np.concatenate(rests), 0.5 ** back,
                                         rows[users[short]])
    return users, removed, before[users] - now


def _entries(tail: np.ndarray, weights: np.ndarray):
    """(n, w) rows and weights (0: not counted) -> (user, row, weight) entries."""
    u, at = np.nonzero(weights)
    return u, tail[u, at], weights[u, at]


def _variants(history: list[np.ndarray], recent: int):
    """Every (user, distinct item among its latest `recent` events) -> (users (V,), items
    (V,), the users' tail windows (n, 2 recent) of rows (-1 padding), each variant's weights
    over its user's window (V, 2 recent): 0.5 ** steps back over the latest `recent` events
    left without the item, 0 elsewhere)."""
    window = 2 * recent
    n = len(history)
    tail = np.full((n, window), -1, np.int64)
    lengths = np.array([min(len(h), window) for h in history], np.int64)
    if lengths.sum():
        flat = np.concatenate([np.asarray(h, np.int64)[len(h) - m:]
                               for h, m in zip(history, lengths)])
        tail[np.arange(window) >= window - lengths[:, None]] = flat
    latest = tail[:, -recent:]
    first = np.ones(latest.shape, bool)           # each distinct latest item once
    for j in range(1, recent):
        first[:, j] = ~(latest[:, :j] == latest[:, j:j + 1]).any(1)
    users, col = np.nonzero(first & (latest >= 0))
    items = latest[users, col]
    keep = (tail[users] != items[:, None]) & (tail[users] >= 0)    # (V, window)
    back = np.cumsum(keep[:, ::-1], axis=1)[:, ::-1] - 1             # kept after, newest 0
    weights = np.where(keep & (back < recent), 0.5 ** np.maximum(back, 0), 0.0)
    return users, items, tail, weights


def _unfilled(history, users, weights, recent: int, window: int) -> np.ndarray:
    """The variants whose latest `recent` events reach past the window (an item repeated
    across it): those are read from the whole history."""
    return np.flatnonzero(((weights > 0).sum(1) < recent) &
                          (np.array([len(history[u]) for u in users], np.int64) > window))


def _spread(co, users: np.ndarray, cited: np.ndarray) -> np.ndarray:
    """cooccurrence_drops' rows for a block of users -> (b, L, k) at `cited`'s places."""
    cu, crow, drops = co
    out = np.zeros(cited.shape + (drops.shape[1],))
    local = np.full(int(users.max()) + 1, -1)
    local[users] = np.arange(len(users))
    inside = np.flatnonzero(cu < len(local))
    mine = inside[local[cu[inside]] >= 0]
    if not len(mine):
        return out
    width, span = cited.shape[1], int(cited.max()) + 1
    flat = np.where(cited >= 0, np.arange(len(users))[:, None] * span + cited, -1).ravel()
    order = np.argsort(flat, kind="stable")
    spot = order[np.searchsorted(flat[order], local[cu[mine]] * span + crow[mine])]
    out[spot // width, spot % width] = drops[mine]
    return out
