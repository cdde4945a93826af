"""User vectors + centroids -> user profiles and segment summaries. Knows nothing about Ray.

A profile: nearest segment, distance, confidence (margin between the two nearest centroids),
the top interest segments with weights (from the segments of the items in the history, each
item weighted as in pooling) and event counts. A segment: size, most frequent items and its
distinctive terms (class-based TF-IDF over its users' item texts, as BERTopic does).
"""
from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pyarrow as pa

from raypipe.segments.segmentation import Segmentation
from raypipe.schema import EVENT_TYPES

COUNTS = ("n_events",) + tuple(f"n_{e}" for e in EVENT_TYPES)

STOPWORDS = frozenset("""a an and are as at be by for from has in is it its of on or the to with
    x oz ounce ounces count pcs pack set size new inch ml fl g lb cm mm""".split())


def nearest_segments(vectors: np.ndarray, segmentation: Segmentation):
    """(n, d) -> segment (n,), distance (n,), confidence (n,) in [0, 1]
    (segmentation.py)."""
    return segmentation.nearest(vectors)[:3]


def interests(item_index: list[np.ndarray], weights: list[np.ndarray], item_segment: np.ndarray,
              n_segments: int, top: int) -> tuple[list, list]:
    """Per user -> (top segments, their weights summing to 1 over all segments)."""
    segs, ws = [], []
    for idx, w in zip(item_index, weights):
        mass = np.bincount(item_segment[idx], weights=w, minlength=n_segments)
        total = mass.sum()
        order = np.argsort(-mass, kind="stable")[:top]
        order = order[mass[order] > 0]
        segs.append(order.tolist())
        ws.append((mass[order] / total).round(6).tolist() if total > 0 else [])
    return segs, ws


EVIDENCE = 3     # history items a profile cites per interest and for its segment


def interest_items(item_index: list[np.ndarray], weights: list[np.ndarray],
                   item_segment: np.ndarray, segs: list[list[int]]) -> tuple[list, list]:
    """Per user, per interest (its segments `segs`) the user's items of that interest with
    the largest history weight, and each one's share of the interest's weight."""
    rows_out, shares_out = [], []
    for idx, w, ss in zip(item_index, weights, segs):
        idx = np.asarray(idx, np.int64)
        items, inverse = np.unique(idx, return_inverse=True)
        mass = np.bincount(inverse, weights=w, minlength=len(items))
        seg_of = item_segment[items]
        rows, shares = [], []
        for s in ss:
            mine = np.flatnonzero(seg_of == s)
            order = mine[np.argsort(-mass[mine], kind="stable")][:EVIDENCE]
            rows.append(items[order].tolist())
            shares.append((mass[order] / max(mass[mine].sum(), 1e-12)).round(6).tolist())
        rows_out.append(rows)
        shares_out.append(shares)
    return rows_out, shares_out


def nearest_own_items(item_index: list[np.ndarray], weights: list[np.ndarray],
                      item_vectors: np.ndarray, centroids: np.ndarray,
                      segments: np.ndarray) -> list[list[int]]:
    """Per user its own items that pull it most towards its segment's centroid: history
    weight times the item vector's dot product with the centroid, positive, best first."""
    out = []
    for idx, w, s in zip(item_index, weights, segments):
        items, inverse = np.unique(np.asarray(idx, np.int64), return_inverse=True)
        pull = np.bincount(inverse, weights=w, minlength=len(items)) * (
            item_vectors[items] @ centroids[s])
        order = np.argsort(-pull, kind="stable")[:EVIDENCE]
        out.append(items[order[pull[order] > 0]].tolist())
    return out


def profile_table(user_ids, segment_vectors: np.ndarray, item_index: list[np.ndarray],
                  weights: list[np.ndarray], counts: dict, segmentation: Segmentation,
                  item_segment: np.ndarray, top: int, item_ids=None,
                  item_vectors: np.ndarray | None = None) -> pa.Table:
    """Users' segment vectors (n, d), histories (catalogue rows, weights) and event counts
    -> `profiles` rows; `levels` holds the user's segment at each level of the hierarchy
    (one level when flat). With the catalogue's `item_ids` (and its `item_vectors` in the
    segments' space), what explains them: each interest's items and their shares
    (`interest_items`, `interest_item_weights`) and the user's own items nearest its
    segment (`segment_items`). The batch job and the service both make profiles here."""
    seg, dist, conf, paths = segmentation.nearest(segment_vectors)
    segs, ws = interests(item_index, weights, item_segment, segmentation.n_segments, top)
    evidence = {}
    if item_ids is not None:
        ids = pa.array(item_ids, pa.string()) if not isinstance(item_ids, pa.Array) \
            else item_ids
        name = lambda rows: ids.take(pa.array(rows, pa.int64())).to_pylist()   # noqa: E731
        rows, shares = interest_items(item_index, weights, item_segment, segs)
        evidence["interest_items"] = pa.array([[name(r) for r in u] for u in rows],
                                              pa.list_(pa.list_(pa.string())))
        evidence["interest_item_weights"] = pa.array(shares, pa.list_(pa.list_(pa.float32())))
        if item_vectors is not None and len(item_vectors) == len(ids):
            near = nearest_own_items(item_index, weights, item_vectors,
                                     segmentation.centroids, seg)
            evidence["segment_items"] = pa.array([name(r) for r in near],
                                                 pa.list_(pa.string()))
    return pa.table({"user_id": user_ids, "segment": pa.array(seg, pa.int32()),
                     "distance": pa.array(dist, pa.float32()),
                     "confidence": pa.array(conf, pa.float32()),
                     "interests": pa.array(segs, pa.list_(pa.int32())),
                     "interest_weights": pa.array(ws, pa.list_(pa.float32())),
                     "history_length": pa.array([len(i) for i in item_index], pa.int32()),
                     "levels": pa.array(list(paths.astype(np.int32)), pa.list_(pa.int32())),
                     **{c: counts[c] for c in COUNTS}, **evidence})


def segment_item_mass(segments: np.ndarray, item_index: list[np.ndarray],
                      weights: list[np.ndarray]) -> pa.Table:
    """(segment, item_row, weight, users) summed over this batch of users."""
    if not item_index:
        return pa.table({"segment": pa.array([], pa.int32()), "item_row": pa.array([], pa.int64()),
                         "weight": pa.array([], pa.float64())})
    lengths = [len(ix) for ix in item_index]
    seg = np.repeat(segments, lengths).astype(np.int64)
    item = np.concatenate(item_index).astype(np.int64) if sum(lengths) else np.zeros(0, np.int64)
    w = np.concatenate(weights) if sum(lengths) else np.zeros(0)
    key = seg * (item.max(initial=0) + 1) + item
    uniq, inv = np.unique(key, return_inverse=True)
    total = np.bincount(inv, weights=w)
    first = np.zeros(len(uniq), np.int64)
    first[inv] = np.arange(len(inv))
    return pa.table({"segment": pa.array(seg[first], pa.int32()),
                     "item_row": pa.array(item[first], pa.int64()),
                     "weight": pa.array(total, pa.float64())})


def roll_up(mass: pa.Table, to: np.ndarray) -> pa.Table:
    """(segment, item_row, weight) at the finest level -> the same with each segment
    replaced by its node `to[segment]` at a coarser level, summed."""
    if np.array_equal(to, np.arange(len(to))):
        return mass
    up = pa.table({"segment": pa.array(to[mass["segment"].to_numpy()], pa.int32()),
                   "item_row": mass["item_row"], "weight": mass["weight"]})
    summed = up.group_by(["segment", "item_row"]).aggregate([("weight", "sum")])
    return pa.table({"segment": summed["segment"], "item_row": summed["item_row"],
                     "weight": summed["weight_sum"]})


def tokenize(text: str) -> list[str]:
    return [t for t in re.findall(r"[a-z][a-z0-9\-]+", text.lower()) if t not in STOPWORDS]


def distinctive_terms(mass: dict[int, dict[int, float]], item_texts: list[str],
                      top: int, max_items: int = 5000) -> dict[int, list[str]]:
    """c-TF-IDF: per segment, terms frequent in its items and rare in other segments.
    mass: segment -> {item_row: weight}."""
    tf: dict[int, Counter] = {}
    for seg, items in mass.items():
        counts = Counter()
        for row, w in sorted(items.items(), key=lambda kv: -kv[1])[:max_items]:
            for term in tokenize(item_texts[row] or ""):
                counts[term] += w
        tf[seg] = counts
    overall = Counter()
    for counts in tf.values():
        overall.update(counts)
    avg = np.mean([sum(c.values()) for c in tf.values()]) if tf else 0.0
    out = {}
    for seg, counts in tf.items():
        total = sum(counts.values()) or 1.0
        score = {t: (f / total) * math.log(1 + avg / overall[t]) for t, f in counts.items()}
        out[seg] = [t for t, _ in sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
    return out


POPULAR_POOL = 50     # representative items come from a segment's this many most popular


def representative_items(mass: dict[int, dict[int, float]], top: int,
                         how: str = "lift") -> dict[int, list[int]]:
    """Per segment, the item rows that stand for it. how="lift": of its POPULAR_POOL most
    popular items, those its users hold most over everyone's share (lift = the item's share
    of the segment's event weight over its share of all), so the items are both the
    segment's own best-sellers and specific to it. how="popular": by weight alone
    (globally popular items then stand for every segment). bench/segment_names.py measures
    both against the segment's name."""
    overall: Counter = Counter()
    for items in mass.values():
        overall.update(items)
    grand = sum(overall.values()) or 1.0
    out = {}
    for seg, items in mass.items():
        popular = sorted(items, key=lambda r: (-items[r], r))
        if how == "popular":
            out[seg] = popular[:top]
            continue
        total = sum(items.values()) or 1.0
        # Rounded: items only this segment holds all have the same lift, which float
        # rounding would otherwise order at random; they go by popularity.
        lift = {r: round(items[r] / total * grand / overall[r], 6)
                for r in popular[:POPULAR_POOL]}
        out[seg] = sorted(lift, key=lambda r: (-lift[r], -items[r], r))[:top]
    return out


def summarize_segments(sizes: np.ndarray, mass: pa.Table, item_ids: list[str],
                       item_texts: list[str], top_items: int, top_terms: int) -> pa.Table:
    """Segment sizes + (segment, item_row, weight) totals -> one row per segment: its name
    (distinctive terms) and representative items (popular in it and specific to it)."""
    by_seg: dict[int, dict[int, float]] = {s: {} for s in range(len(sizes))}
    for s, r, w in zip(*(mass[c].to_numpy() for c in ("segment", "item_row", "weight"))):
        by_seg[int(s)][int(r)] = float(w)
    terms = distinctive_terms(by_seg, item_texts, top_terms)
    items = representative_items(by_seg, top_items)
    rows = []
    for s in range(len(sizes)):
        ranked = items.get(s, [])
        rows.append({"segment": s, "size": int(sizes[s]),
                     "name": " / ".join(terms.get(s, [])[:3]),
                     "top_terms": terms.get(s, []),
                     "top_items": [item_ids[r] for r in ranked],
                     "top_item_texts": [item_texts[r] for r in ranked]})
    return pa.Table.from_pylist(rows)
