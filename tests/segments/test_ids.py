"""segments/ids.py: Hungarian matching of centroids to the previous run's, relabelling, and
the id-keeping step the segments stage applies."""
import numpy as np
import pytest

from raypipe.segments import ids as segment_ids


def test_matching_recovers_a_permutation_and_relabels():
    rng = np.random.default_rng(0)
    old = rng.standard_normal((6, 8)).astype(np.float32)
    perm = rng.permutation(6)
    new = old[perm] + 0.01 * rng.standard_normal((6, 8)).astype(np.float32)
    ids, moved = segment_ids.match(new, old)
    assert ids.tolist() == perm.tolist()
    assert (moved < 0.1).all()
    labels = np.array([0, 1, 2, 3, 4, 5, 0])
    centroids, stable = segment_ids.relabel(new, labels, ids)
    assert stable.tolist() == perm[labels].tolist()
    assert np.allclose(centroids[perm], new)
    with pytest.raises(ValueError):
        segment_ids.match(new[:5], old)


def test_stable_keeps_the_previous_ids_or_says_why_not():
    rng = np.random.default_rng(1)
    old = rng.standard_normal((4, 3)).astype(np.float32)
    perm = np.array([2, 0, 3, 1])
    labels = np.array([0, 1, 2, 3, 3])
    centroids, stable, kept = segment_ids.stable(old[perm], labels,
                                                 {"reference": "prev", "centroids": old})
    assert stable.tolist() == perm[labels].tolist() and np.allclose(centroids, old)
    assert kept["reference"] == "prev" and len(kept["moved"]) == 4
    assert kept["kmeans_cluster"] == np.argsort(perm).tolist()
    same, labels_same, none = segment_ids.stable(old, labels, {"reference": None, "note": "x"})
    assert labels_same.tolist() == labels.tolist() and none["kmeans_cluster"] == [0, 1, 2, 3]
    assert none["note"] == "x"
