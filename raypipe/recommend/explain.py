"""Why each recommended item: its reason (`recent_item`, `bought_together`, `segment`,
`interest`; for `blend`, that of the component adding most to its score), the history items
that most support it with their weights (recommend/attribution.py), and a short sentence
from their texts, as table columns and service fields. Knows nothing about Ray; the batch
job and the service both explain here."""
from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa

from raypipe.recommend.attribution import (
    REASONS, TOP, Evidence, Explained, blend, blend_choice, cooccurrence, interest,
    occluded_vector, segment)
from raypipe.recommend.occlusion import pooled

__all__ = ["REASONS", "TOP", "EXPLANATIONS", "Evidence", "Explained", "explain_all",
           "columns", "cooccurrence", "interest", "segment"]

EXPLANATIONS = pa.schema([("reason", pa.string()), ("because", pa.list_(pa.string())),
                          ("because_weights", pa.list_(pa.float32())),
                          ("explanation", pa.string())])


def explain_all(rec, ranked: dict, ev: Evidence, parts) -> dict[str, Explained]:
    """A Recommender's answer for a batch -> {strategy: Explained}. The lists that need
    `vector` evidence (vector's, blend's) are explained in one pass, side by side; for
    pooled users by exact occlusion (occlusion.pooled)."""
    wanted = [s for s in ("vector", "blend") if s in ranked]
    vec = {}
    if ev.query_weights is not None and wanted:       # pooled: exact, both in one pass
        choose = blend_choice(parts, ranked["blend"].rows, rec.blend_weights) \
            if "blend" in ranked else None
        vec = pooled(rec, {s: ranked[s].rows for s in wanted}, ev, choose)
    elif wanted:
        both = np.concatenate([ranked[s].rows for s in wanted], axis=1)
        got = occluded_vector(both, ev, rec.item_vectors)
        at = np.cumsum([0] + [ranked[s].rows.shape[1] for s in wanted])
        vec = {s: Explained(got.reason[:, a:b], got.because[:, a:b], got.weights[:, a:b])
               for s, a, b in zip(wanted, at[:-1], at[1:])}
    out, seg = {}, None
    pooled_blend = ev.query_weights is not None     # cites from occlusion alone
    if "segment" in ranked or ("blend" in ranked and not pooled_blend):
        # the same for every item of a user
        seg = segment(np.zeros((len(ev.history), 1), np.int64), ev, rec.item_vectors)
    for strategy, r in ranked.items():
        if strategy == "vector":
            out[strategy] = vec["vector"]
        elif strategy == "segment":
            out[strategy] = _spread(seg, r.rows)
        elif strategy == "multi":
            out[strategy] = interest(r.rows, ev, rec.item_vectors)
        elif strategy == "blend" and pooled_blend:
            out[strategy] = vec["blend"]
        elif strategy == "blend":
            co = cooccurrence(r.rows, ev, rec.followers, rec.cfg.cooccurrence_recent)
            out[strategy] = blend({"vector": vec["blend"], "cooccurrence": co,
                                   "segment": _spread(seg, r.rows)},
                                  blend_choice(parts, r.rows, rec.blend_weights))
    return out


def _spread(seg: Explained, rows: np.ndarray) -> Explained:
    """A per-user `segment` explanation (one column) over a list's items."""
    n, k = rows.shape
    out = Explained(np.repeat(seg.reason, k, axis=1), np.repeat(seg.because, k, axis=1),
                    np.repeat(seg.weights, k, axis=1))
    out.because[rows < 0], out.weights[rows < 0] = -1, 0
    return out


def columns(exp: Explained, u: np.ndarray, c: np.ndarray, item_ids: pa.Array,
            texts: list[str] | None, segments: np.ndarray | None) -> dict:
    """The explanation columns of the rows (u, c) of one strategy's list (vectorised; the
    sentences built with Arrow's string kernels, `_sentences`)."""
    because, weights = exp.because[u, c], exp.weights[u, c]
    keep = because >= 0
    offsets = pa.array(np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int32))
    cited = pa.ListArray.from_arrays(offsets, item_ids.take(pa.array(because[keep])))
    weight_list = pa.ListArray.from_arrays(offsets, pa.array(weights[keep], pa.float32()))
    reason = pa.DictionaryArray.from_arrays(pa.array(exp.reason[u, c], pa.int8()),
                                            pa.array(REASONS)).cast(pa.string())
    return {"reason": reason, "because": cited, "because_weights": weight_list,
            "explanation": _sentences(exp.reason[u, c], because, texts, item_ids, segments)}


def _sentences(reason: np.ndarray, because: np.ndarray, texts, item_ids: pa.Array,
               segments: np.ndarray | None) -> pa.Array:
    """Every row's sentence at once, from the first two cited items' short texts, quoted
    ('A' and 'B'): "Often chosen after ..." (bought_together), "For your interest in ..."
    (interest), "Popular with shoppers like you (segment S)[, who also like ...]"
    (segment), else "Because of ...", or "Close to your recent activity" with none.
    Built as one join of pieces, each taken from a small table by a per-row code."""
    import pyarrow.compute as pc
    n = len(reason)
    cited = because[:, :2]
    present = np.zeros(max(int(cited.max(initial=-1)) + 1, 1), bool)
    present[cited[cited >= 0]] = True
    uniq = np.flatnonzero(present)
    short = pa.array([""] + [_short(texts[r] if texts is not None else item_ids[int(r)].as_py())
                             for r in uniq], pa.string())
    # the names: 0 is "" (no such citation), else 1 + the item's place in `uniq`
    code = np.zeros(len(present), np.int32)
    code[uniq] = np.arange(1, len(uniq) + 1, dtype=np.int32)
    name = np.where(cited >= 0, code[np.maximum(cited, 0)], 0)
    count = (cited >= 0).sum(1)                                          # 0, 1 or 2 names
    is_segment = reason == REASONS.index("segment")
    lead = np.full(n, 3, np.int8)                                        # "Because of '"
    lead[reason == REASONS.index("bought_together")] = 1
    lead[reason == REASONS.index("interest")] = 2
    lead[count == 0] = 0
    lead[is_segment] = 4
    leads = pa.array(["Close to your recent activity", "Often chosen after '",
                      "For your interest in '", "Because of '",
                      "Popular with shoppers like you (segment "])
    seg = pc.cast(pa.array(np.zeros(n, np.int64) if segments is None else segments),
                  pa.string())
    seg_part = pc.if_else(pa.array(is_segment), seg, "")
    close = pa.array(["", ")", "), who also like '"]).take(
        pa.array(np.where(is_segment, np.where(count > 0, 2, 1), 0).astype(np.int8)))
    middle = pa.array(["", "'", "' and '"]).take(pa.array(count.astype(np.int8)))
    end = pa.array(["", "'"]).take(pa.array((count == 2).astype(np.int8)))
    return pc.binary_join_element_wise(
        leads.take(pa.array(lead)), seg_part, close, short.take(pa.array(name[:, 0])),
        middle, short.take(pa.array(name[:, 1])), end, "")


@functools.lru_cache(maxsize=1 << 18)
def _short(text: str, limit: int = 60) -> str:
    text = str(text).split(" | ")[0].strip()
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"
