"""segments/kmeans.py (with shard.py and seeding.py): hand-computed cases, local and Ray
shards equal, sharding-independent results, checkpoints, empty clusters, errors, GPU
assignment equal to CPU (skipped without one), against scikit-learn."""
import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from raypipe.segments.kmeans import KMeans, LocalShards, split_empty, update

FOUR = np.array([[0, 0], [0, 2], [10, 0], [10, 2]], np.float32)


def test_four_points_known_centres_and_inertia():
    km = KMeans(2, random_state=0).fit(FOUR)
    centres = sorted(map(tuple, km.cluster_centers_.round(6)))
    assert centres == [(0.0, 1.0), (10.0, 1.0)]
    assert km.inertia_ == pytest.approx(4.0)       # each point is 1 away from its centre
    assert km.labels_[0] == km.labels_[1] != km.labels_[2] == km.labels_[3]
    assert np.array_equal(km.predict(FOUR), km.labels_)


def test_blobs_recovered_exactly():
    x, y = make_blobs(3000, centers=5, n_features=8, random_state=3)
    labels = KMeans(5, random_state=0).fit_predict(x)
    assert adjusted_rand_score(y, labels) == 1.0


def test_shards_in_memory_and_on_ray_give_the_same_result(ray_session):
    from raypipe.jobs.kmeans_tasks import RayShards
    x, _ = make_blobs(2000, centers=4, n_features=6, random_state=1)
    parts = np.array_split(x.astype(np.float32), 5)
    local = KMeans(4, random_state=7).fit(LocalShards(parts))
    remote = KMeans(4, random_state=7).fit(RayShards.from_arrays(parts))
    np.testing.assert_allclose(local.cluster_centers_, remote.cluster_centers_, rtol=1e-6)
    assert np.array_equal(local.labels_, remote.labels_)
    assert local.inertia_ == pytest.approx(remote.inertia_)


def test_no_worse_than_scikit_learn_on_same_data():
    from sklearn.cluster import KMeans as SkKMeans
    x, _ = make_blobs(4000, centers=12, n_features=16, cluster_std=3.0, random_state=5)
    ours = KMeans(12, random_state=0, n_init=3).fit(x).inertia_
    theirs = SkKMeans(12, random_state=0, n_init=3).fit(x).inertia_
    assert ours <= theirs * 1.01


def test_empty_cluster_is_reseeded_by_splitting_the_largest():
    sums = np.array([[4.0, 4.0], [0.0, 0.0], [1.0, 1.0]])
    counts = np.array([4, 0, 1])
    c = split_empty(update(sums, counts), counts, np.random.default_rng(0))
    assert np.isfinite(c).all()
    np.testing.assert_allclose(c[1], [1.0, 1.0], atol=1e-3)
    assert not np.array_equal(c[0], c[1])


def test_errors_name_the_values():
    with pytest.raises(ValueError, match="n_samples=4 should be >= n_clusters=5"):
        KMeans(5).fit(FOUR)
    bad = FOUR.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="1 rows hold NaN or inf, first at row 2"):
        KMeans(2).fit(bad)
    with pytest.raises(ValueError, match="init shape"):
        KMeans(2, init=np.zeros((3, 2), np.float32)).fit(FOUR)


@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
def test_same_result_however_the_data_is_sharded(init):
    x, _ = make_blobs(3000, centers=6, n_features=8, random_state=2)
    one = KMeans(6, init=init, random_state=4).fit(LocalShards([x.astype(np.float32)]))
    many = KMeans(6, init=init, random_state=4).fit(LocalShards(np.array_split(x, 7)))
    np.testing.assert_allclose(one.cluster_centers_, many.cluster_centers_, rtol=1e-5)
    assert np.array_equal(one.labels_, many.labels_)


class Interrupted(Exception):
    pass


class FailingShards(LocalShards):
    """Raises on the n-th statistics pass, like a driver killed mid-fit."""

    def __init__(self, parts, fail_at):
        super().__init__(parts)
        self.calls, self.fail_at = 0, fail_at

    def scan(self, fn, states, *args):
        if fn.__name__ == "lloyd_step":
            self.calls += 1
            if self.calls == self.fail_at:
                raise Interrupted
        return super().scan(fn, states, *args)


def test_checkpoint_resumes_an_interrupted_fit_to_the_same_result(tmp_path):
    x, _ = make_blobs(2000, centers=5, n_features=4, cluster_std=4.0, random_state=0)
    parts = np.array_split(x.astype(np.float32), 3)
    kw = {"max_iter": 12, "tol": 0.0, "random_state": 1, "n_init": 2}
    counted = FailingShards(parts, fail_at=-1)
    whole = KMeans(5, **kw).fit(counted)
    path = str(tmp_path / "km.npz")
    with pytest.raises(Interrupted):
        KMeans(5, checkpoint_path=path, **kw).fit(FailingShards(parts, fail_at=4))
    rest = FailingShards(parts, fail_at=-1)
    resumed = KMeans(5, checkpoint_path=path, **kw).fit(rest)
    # Sums are rebuilt from scratch on resume, not updated: equal up to float rounding.
    np.testing.assert_allclose(resumed.cluster_centers_, whole.cluster_centers_, atol=1e-5)
    assert resumed.inertia_ == pytest.approx(whole.inertia_)
    assert rest.calls == counted.calls - 3            # the 3 finished iterations are not redone


def test_predict_names_a_dimension_mismatch():
    km = KMeans(2, random_state=0).fit(FOUR)
    with pytest.raises(ValueError, match="dimension mismatch: x has d=3, centroids d=2"):
        km.predict(np.zeros((1, 3), np.float32))


def test_spherical_centroids_are_unit_length():
    x, _ = make_blobs(500, centers=3, n_features=5, random_state=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    km = KMeans(3, spherical=True, random_state=0).fit(x)
    np.testing.assert_allclose(np.linalg.norm(km.cluster_centers_, axis=1), 1.0, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs CUDA")
def test_gpu_assignment_matches_cpu(monkeypatch):
    from raypipe.segments import shard as kmeans_shard
    x, _ = make_blobs(5000, centers=8, n_features=16, random_state=0)
    x = x.astype(np.float32)
    centroids = x[:8].copy()
    gpu = kmeans_shard.assign(x, centroids, 2)
    monkeypatch.setattr(kmeans_shard, "use_gpu", lambda: False)
    cpu = kmeans_shard.assign(x, centroids, 2)
    assert (gpu[1] == cpu[1]).mean() > 0.999
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=1e-3, atol=1e-2)
