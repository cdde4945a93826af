"""Why each recommended item: its reason (`recent_item`, `bought_together`, `segment`,
`interest`; for `blend`, that of the component adding most to its score), the history items
that most support it with their weights (recommend/attribution.py), and a short sentence
from their texts, as table columns and service fields. Knows nothing about Ray; the batch
job and the service both explain here."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from raypipe.recommend.attribution import (
    REASONS, TOP, Evidence, Explained, blend, blend_choice, cooccurrence, interest,
    occluded_vector, pooled_vector, segment)

__all__ = ["REASONS", "TOP", "EXPLANATIONS", "Evidence", "Explained", "explain_all",
           "columns", "cooccurrence", "interest", "segment", "pooled_vector"]

EXPLANATIONS = pa.schema([("reason", pa.string()), ("because", pa.list_(pa.string())),
                          ("because_weights", pa.list_(pa.float32())),
                          ("explanation", pa.string())])


def explain_all(rec, ranked: dict, ev: Evidence, parts) -> dict[str, Explained]:
    """A Recommender's answer for a batch -> {strategy: Explained}. The lists that need
    `vector` evidence (vector's, blend's) are explained in one pass, side by side."""
    wanted = [s for s in ("vector", "blend") if s in ranked]
    vec = {}
    if wanted:
        both = np.concatenate([ranked[s].rows for s in wanted], axis=1)
        got = pooled_vector(both, ev, rec.item_vectors) if ev.query_weights is not None \
            else occluded_vector(both, ev, rec.item_vectors)
        at = np.cumsum([0] + [ranked[s].rows.shape[1] for s in wanted])
        vec = {s: Explained(got.reason[:, a:b], got.because[:, a:b], got.weights[:, a:b])
               for s, a, b in zip(wanted, at[:-1], at[1:])}
    out, seg = {}, None
    if {"segment", "blend"} & set(ranked):       # the same for every item of a user
        seg = segment(np.zeros((len(ev.history), 1), np.int64), ev, rec.item_vectors)
    for strategy, r in ranked.items():
        if strategy == "vector":
            out[strategy] = vec["vector"]
        elif strategy == "segment":
            out[strategy] = _spread(seg, r.rows)
        elif strategy == "multi":
            out[strategy] = interest(r.rows, ev, rec.item_vectors)
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
    (segment), else "Because of ...", or "Close to your recent activity" with none."""
    import pyarrow.compute as pc
    names = []
    uniq = np.unique(because[:, :2][because[:, :2] >= 0])
    short = pa.array([_short(texts[r] if texts is not None else item_ids[int(r)].as_py())
                      for r in uniq], pa.string())
    for j in range(2):
        at = np.searchsorted(uniq, np.maximum(because[:, j], 0))
        has = because[:, j] >= 0
        names.append(pc.if_else(pa.array(has), short.take(pa.array(np.minimum(
            at, max(len(uniq) - 1, 0)))) if len(uniq) else pa.nulls(len(has), pa.string()),
            pa.scalar(None, pa.string())))
    one = pc.binary_join_element_wise("'", names[0], "'", "")
    two = pc.binary_join_element_wise("'", names[0], "' and '", names[1], "'", "")
    quoted = pc.coalesce(two, one)
    has = pc.is_valid(quoted)
    seg = pa.array(np.zeros(len(reason), np.int64) if segments is None else segments)
    popular = pc.binary_join_element_wise("Popular with shoppers like you (segment ",
                                          pc.cast(seg, pa.string()), ")", "")
    code = {r: pa.array(reason == i) for i, r in enumerate(REASONS)}
    fallback = pc.if_else(has, pc.binary_join_element_wise("Because of ", quoted, ""),
                          "Close to your recent activity")
    out = pc.if_else(pc.and_(code["bought_together"], has), pc.binary_join_element_wise(
        "Often chosen after ", quoted, ""), fallback)
    out = pc.if_else(pc.and_(code["interest"], has), pc.binary_join_element_wise(
        "For your interest in ", quoted, ""), out)
    segment_text = pc.if_else(has, pc.binary_join_element_wise(popular, ", who also like ",
                                                               quoted, ""), popular)
    return pc.if_else(code["segment"], segment_text, out)


def _short(text: str, limit: int = 60) -> str:
    text = str(text).split(" | ")[0].strip()
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"
