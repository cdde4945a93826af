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
           "columns", "sentence", "cooccurrence", "interest", "segment", "pooled_vector"]

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
    out = {}
    for strategy, r in ranked.items():
        if strategy == "vector":
            out[strategy] = vec["vector"]
        elif strategy == "segment":
            out[strategy] = segment(r.rows, ev, rec.item_vectors)
        elif strategy == "multi":
            out[strategy] = interest(r.rows, ev, rec.item_vectors)
        elif strategy == "blend":
            co = cooccurrence(r.rows, ev, rec.followers, rec.cfg.cooccurrence_recent)
            out[strategy] = blend(r.rows, {"vector": vec["blend"], "cooccurrence": co,
                                           "segment": segment(r.rows, ev, rec.item_vectors)},
                                  blend_choice(parts, r.rows, rec.blend_weights))
    return out


def columns(exp: Explained, u: np.ndarray, c: np.ndarray, item_ids: pa.Array,
            texts: list[str] | None, segments: np.ndarray | None) -> dict:
    """The explanation columns of the rows (u, c) of one strategy's list."""
    reasons = [REASONS[i] for i in exp.reason[u, c]]
    because, weights = exp.because[u, c], exp.weights[u, c]
    keep = because >= 0
    ids = item_ids.take(pa.array(because[keep])).to_pylist()
    sizes = keep.sum(1)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    cited = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids, pa.string()))
    weight_list = pa.ListArray.from_arrays(pa.array(offsets),
                                           pa.array(weights[keep], pa.float32()))
    names = [texts[r] for r in because[keep]] if texts is not None else ids
    sentences = [sentence(reason, names[offsets[i]:offsets[i + 1]],
                          None if segments is None else int(segments[i]))
                 for i, reason in enumerate(reasons)]
    return {"reason": pa.array(reasons, pa.string()), "because": cited,
            "because_weights": weight_list, "explanation": pa.array(sentences, pa.string())}


def sentence(reason: str, texts: list[str], segment: int | None) -> str:
    """A short sentence from the cited items' texts (best first)."""
    names = [_short(t) for t in texts[:2]]
    cited = " and ".join(f"'{t}'" for t in names)
    if reason == "bought_together" and names:
        return f"Often chosen after {cited}"
    if reason == "segment":
        return f"Popular with shoppers like you (segment {segment})" + (
            f", who also like {cited}" if names else "")
    if reason == "interest" and names:
        return f"For your interest in {cited}"
    return f"Because of {cited}" if names else "Close to your recent activity"


def _short(text: str, limit: int = 60) -> str:
    text = str(text).split(" | ")[0].strip()
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"
