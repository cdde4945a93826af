"""Stable segment ids: a new K-means result takes the ids of the previous run's segments.
Knows nothing about Ray.

K-means numbers its clusters arbitrarily, so a retrain would reshuffle every segment id and
break whatever was built on them (campaigns, dashboards, the service's answers). The new
centroids are matched one-to-one to the previous run's by minimum total squared distance
(Hungarian matching), and each new segment takes its match's id. The manifest records, per
segment, how far its centroid moved and the share of its users who were in another segment.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy.optimize import linear_sum_assignment


def match(new: np.ndarray, old: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k, d) new and (k, d) previous centroids -> (ids, moved): ids[i] is the previous id
    that new cluster i takes, moved[i] the Euclidean distance between the two centroids.
    The pairing minimises the sum of squared distances."""
    if new.shape != old.shape:
        raise ValueError(f"cannot match {new.shape} centroids to {old.shape}")
    cost = ((new[:, None, :].astype(np.float64) - old[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    ids = np.empty(len(new), np.int64)
    ids[rows] = cols
    return ids, np.sqrt(cost[rows, cols])[np.argsort(rows)]


def relabel(centroids: np.ndarray, labels: np.ndarray, ids: np.ndarray):
    """Centroids and labels in K-means' numbering -> the same in stable ids (centroid row s
    is segment s)."""
    out = np.empty_like(centroids)
    out[ids] = centroids
    return out, ids[labels]


def changed_share(previous: pa.Table, current: pa.Table, n_segments: int) -> dict:
    """(user_id, segment) of the previous and this run -> per current segment, the share of
    its users (among those in both runs) whose previous segment was another, and overall."""
    both = current.select(["user_id", "segment"]).join(
        previous.select(["user_id", "segment"]).rename_columns(["user_id", "previous"]),
        "user_id", join_type="inner")
    seg, prev = both["segment"].to_numpy(), both["previous"].to_numpy()
    moved = seg != prev
    users = np.bincount(seg, minlength=n_segments)
    changed = np.bincount(seg, weights=moved, minlength=n_segments)
    return {"users_in_both_runs": int(len(seg)),
            "changed_share": round(float(moved.mean()), 4) if len(seg) else None,
            "per_segment": [round(float(c / u), 4) if u else None
                            for c, u in zip(changed, users)]}


def stable(centroids: np.ndarray, labels: np.ndarray, previous: dict) -> tuple:
    """K-means' centroids and labels and `previous` ({reference, centroids} of the run whose
    ids to keep, or {reference: None, note}) -> (centroids, labels, what the manifest says:
    reference, moved per segment, kmeans_cluster: each segment's K-means cluster)."""
    kept = dict(previous)
    ids = np.arange(len(centroids))
    if kept["reference"]:
        ids, moved = match(centroids, kept.pop("centroids"))
        centroids, labels = relabel(centroids, labels, ids)
        kept["moved"] = np.round(moved[np.argsort(ids)], 6).tolist()
    cluster = np.empty_like(ids)
    cluster[ids] = np.arange(len(ids))
    kept["kmeans_cluster"] = cluster.tolist()
    return centroids, labels, kept
