"""The segment tree (segments/tree.py) and assignment through it (segments/segmentation.py)."""
import numpy as np
import pyarrow as pa
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score

from raypipe.segments import tree
from raypipe.segments.kmeans import KMeans
from raypipe.segments.segmentation import Segmentation, level_rows

LEVELS = (2, 4, 8, 24)


def anchors(method, m, groups=4):
    """anchored needs each leaf's flat segment; any grouping will do for the shape checks."""
    return np.arange(m) % groups if method == "anchored" else None


def leaves(seed=0, m=24, d=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(m, d)).astype(np.float32), rng.integers(1, 200, m)


def test_ward_with_equal_sizes_is_scikit_learns_ward():
    c, _ = leaves()
    cuts = tree.ward(c, np.ones(len(c)), (3, 6, 12))
    for k, labels in cuts.items():
        ref = AgglomerativeClustering(k, linkage="ward").fit_predict(c)
        assert adjusted_rand_score(ref, labels) == 1.0


def test_ward_weighs_by_size():
    # Three leaves on a line: b is nearer to c, but a holds one user, so moving it onto b
    # costs less than merging two heavy segments.
    c = np.array([[0.0], [3.0], [4.5]], np.float32)
    assert tree.ward(c, np.array([1, 1000, 1000]), (2,))[2].tolist() == [0, 0, 1]
    assert tree.ward(c, np.array([1, 1, 1]), (2,))[2].tolist() == [0, 1, 1]


@pytest.mark.parametrize("method", tree.TREES)
def test_every_level_is_a_cut_of_the_same_tree(method):
    c, n = leaves(1)
    paths = tree.build(c, n, LEVELS, method, anchors(method, 24))
    assert paths.shape == (24, 4) and paths[:, -1].tolist() == list(range(24))
    for j, level in enumerate(LEVELS):
        assert sorted(set(paths[:, j])) == list(range(level))
    for j in range(1, len(LEVELS)):             # each node has exactly one parent
        for node in range(LEVELS[j]):
            assert len(set(paths[paths[:, j] == node, j - 1])) == 1


@pytest.mark.parametrize("method", tree.TREES)
def test_the_separated_groups_are_the_coarsest_level(method):
    rng = np.random.default_rng(2)
    c = np.concatenate([rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 50,
                        rng.normal(size=(6, 3)) - 50])
    paths = tree.build(c.astype(np.float32), rng.integers(1, 30, 18), (3, 6, 18), method,
                       np.arange(18) // 6 if method == "anchored" else None)
    assert adjusted_rand_score(paths[:, 0], [0] * 6 + [1] * 6 + [2] * 6) == 1.0


@pytest.mark.parametrize("method", tree.TREES)
def test_cut_inertia_from_the_leaves_is_the_users_inertia(method):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 5)).astype(np.float32)
    km = KMeans(12, random_state=0).fit(x)
    sizes = np.bincount(km.labels_, minlength=12)
    paths = tree.build(km.cluster_centers_, sizes, (3, 12), method, anchors(method, 12, 5))
    user_node = paths[km.labels_, 0]
    exact = sum(((x[user_node == s] - x[user_node == s].mean(0)) ** 2).sum() for s in range(3))
    leaf_means = np.stack([x[km.labels_ == s].mean(0) for s in range(12)])
    assert km.inertia_ + tree.cut_inertia(leaf_means, sizes, paths[:, 0]) == \
        pytest.approx(exact, rel=1e-4)


def test_anchored_keeps_the_anchors_as_a_level():
    c, n = leaves(6)
    flat = np.arange(24) % 4
    paths = tree.build(c, n, (2, 4, 8, 24), "anchored", flat)
    assert adjusted_rand_score(paths[:, 1], flat) == 1.0
    for j in (2, 3):                        # finer nodes never mix two anchors
        for node in range(paths[:, j].max() + 1):
            assert len(set(flat[paths[:, j] == node])) == 1
    with pytest.raises(ValueError, match="anchor"):
        tree.build(c, n, (2, 24), "anchored")


def test_a_leafs_anchor_is_the_flat_segment_of_most_of_its_users():
    leaf = np.array([0, 0, 0, 1, 1, 2])
    flat = np.array([1, 1, 0, 0, 0, 1])
    assert tree.leaf_anchors(leaf, flat, 3).tolist() == [1, 0, 1]


def test_node_centroids_are_size_weighted_means():
    c = np.array([[0.0, 0.0], [4.0, 0.0], [10.0, 10.0]], np.float32)
    cents, n = tree.node_centroids(c, np.array([3, 1, 5]), np.array([0, 0, 1]), 2)
    assert np.allclose(cents, [[1.0, 0.0], [10.0, 10.0]]) and n.tolist() == [4, 5]


def test_build_refuses_levels_that_are_not_cuts_of_the_leaves():
    c, n = leaves()
    with pytest.raises(ValueError, match="finest level"):
        tree.build(c, n, (2, 8))
    with pytest.raises(ValueError, match="tree="):
        tree.build(c, n, (2, 24), "single")


def hierarchy(seed=4):
    c, n = leaves(seed)
    paths = tree.build(c, n, LEVELS)
    nodes = tuple(tree.node_centroids(c, n, paths[:, j], k)[0] for j, k in enumerate(LEVELS))
    return Segmentation(nodes, paths, 1)


def test_a_users_segments_come_from_their_nearest_leaf():
    seg = hierarchy()
    x = np.random.default_rng(5).normal(size=(300, 6)).astype(np.float32)
    segment, distance, confidence, paths = seg.nearest(x)
    leaf = ((x[:, None] - seg.leaves[None]) ** 2).sum(-1).argmin(1)
    assert (paths == seg.paths[leaf]).all() and (segment == paths[:, 1]).all()
    assert np.allclose(distance, np.linalg.norm(x - seg.centroids[segment], axis=1), atol=1e-4)
    assert ((0 <= confidence) & (confidence <= 1)).all()
    for j in range(1, len(LEVELS)):             # the coarse segment is the fine one's parent
        assert (seg.parents(LEVELS[j])[paths[:, j]] == paths[:, j - 1]).all()


def test_the_centroids_table_round_trips():
    seg = hierarchy()
    table = seg.to_table()
    assert table.num_rows == sum(LEVELS)
    assert table.filter(table["main"])["level"].to_pylist() == [4] * 4
    assert table.filter(pa.compute.equal(table["level"], 2))["parent"].null_count == 2
    back = Segmentation.from_table(table)
    assert back.levels == LEVELS and back.main == 1 and (back.paths == seg.paths).all()
    assert all(np.array_equal(a, b) for a, b in zip(back.nodes, seg.nodes))


def test_flat_segmentation_and_tables_from_before_the_hierarchy():
    cents = np.array([[0, 0], [4, 0]], np.float32)
    flat = Segmentation.flat(cents)
    segment, distance, confidence, paths = flat.nearest(np.array([[1, 0]], np.float32))
    assert segment.tolist() == [0] and paths.tolist() == [[0]]
    assert distance[0] == pytest.approx(1.0) and confidence[0] == pytest.approx(1 - 1 / 3)
    old = pa.table({"segment": pa.array([1, 0], pa.int32()),
                    "vector": pa.array([[4.0, 0.0], [0.0, 0.0]], pa.list_(pa.float32(), 2))})
    back = Segmentation.from_table(old)
    assert back.levels == (2,) and np.array_equal(back.centroids, cents)
    assert level_rows(old, 2)["segment"].to_pylist() == [0, 1]
