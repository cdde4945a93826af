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
    with pytest.raises(ValueError, match="X has 3 features, but KMeans is expecting 2"):
        km.predict(np.zeros((1, 3), np.float32))


def test_spherical_centroids_are_unit_length():
    x, _ = make_blobs(500, centers=3, n_features=5, random_state=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    km = KMeans(3, spherical=True, random_state=0).fit(x)
    np.testing.assert_allclose(np.linalg.norm(km.cluster_centers_, axis=1), 1.0, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs CUDA")
def test_gpu_assignment_matches_cpu(monkeypatch):
    from raypipe.segments import nearest as kmeans_shard
    x, _ = make_blobs(5000, centers=8, n_features=16, random_state=0)
    x = x.astype(np.float32)
    centroids = x[:8].copy()
    gpu = kmeans_shard.assign(x, centroids, 2)
    monkeypatch.setattr(kmeans_shard, "use_gpu", lambda: False)
    cpu = kmeans_shard.assign(x, centroids, 2)
    assert (gpu[1] == cpu[1]).mean() > 0.999
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=1e-3, atol=1e-2)


def _plain_lloyd(x, centroids, iters):
    """Reference: textbook Lloyd with full float64 distances, labels per iteration."""
    out = []
    for _ in range(iters):
        d = ((x[:, None, :].astype(np.float64) - centroids[None]) ** 2).sum(2)
        labels = d.argmin(1)
        out.append(labels)
        sums = np.zeros_like(centroids, np.float64)
        np.add.at(sums, labels, x)
        counts = np.bincount(labels, minlength=len(centroids))
        centroids = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    return out


@pytest.mark.parametrize("group_size,whole_share,moved_share,threads", [
    (16, None, 0.25, 1), (1, 2.0, 0.25, 2), (3, 2.0, 0.25, 2), (3, 0.0, 0.25, 2),
    (1000, None, 0.25, 2), (3, 0.5, 0.0, 1), (2, 0.5, 1.0, 2)])
def test_bounded_steps_give_textbook_lloyd_labels(monkeypatch, group_size, whole_share,
                                                  moved_share, threads):
    """Whatever the centroid groups (one centroid each, a few, all in one), rows in doubt
    measured group by group or against all centroids, on 1 or 2 threads and whether the
    sums are patched or recounted, every step's labels are Lloyd's and every bound holds."""
    from raypipe.segments import lloyd, nearest
    monkeypatch.setattr(lloyd, "GROUP_SIZE", group_size)
    monkeypatch.setattr(lloyd, "WHOLE_SHARE", whole_share)
    monkeypatch.setattr(lloyd, "MOVED_SHARE", moved_share)
    monkeypatch.setattr(lloyd, "DOUBT_BLOCK", 200)
    monkeypatch.setattr(lloyd, "BLOCK", 256)
    monkeypatch.setattr(nearest, "BLOCK", 256)
    monkeypatch.setattr(nearest, "threads", lambda: threads)
    # Blobs asked for 3x their number of segments: some rows clear every other group, some
    # few of them.
    x, _ = make_blobs(3000, centers=4, n_features=8, cluster_std=1.0, random_state=2)
    x = np.vstack([x, np.random.default_rng(0).uniform(-12, 12, (600, 8))]).astype(np.float32)
    centroids = x[::300].copy()
    expected = _plain_lloyd(x, centroids, 8)
    state = None
    for step, labels in enumerate(expected):
        state, (sums, counts) = lloyd.lloyd_step(x, state, centroids)
        assert (state[0] == labels).mean() > 0.999, step        # float32 near-ties aside
        np.testing.assert_array_equal(counts, np.bincount(state[0], minlength=12))
        _check_bounds(x, state)
        ref = np.zeros((12, 8))
        np.add.at(ref, state[0], x)
        np.testing.assert_allclose(sums, ref, rtol=1e-6, atol=1e-3)
        centroids = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    assert state.lower.shape == (len(x), state.group.max() + 1)


def _check_bounds(x, state):
    """upper >= the distance to the own centroid; each group's lower bound <= the distance
    to its nearest centroid other than the own one (float32 rounding aside)."""
    d = np.sqrt(((x[:, None, :].astype(np.float64) - state.centroids[None]) ** 2).sum(2))
    rows = np.arange(len(x))
    assert (state.upper >= d[rows, state.labels] - 1e-3).all()
    d[rows, state.labels] = np.inf
    for g in range(state.lower.shape[1]):
        nearest = d[:, state.group == g].min(1)
        assert (state.lower[:, g] <= nearest + 1e-3).all(), g


def test_fit_array_with_ray_running_uses_every_cpu(ray_session, monkeypatch):
    from raypipe.segments import inputs
    monkeypatch.setattr(inputs, "RAY_MIN_WORK", 0)
    x, _ = make_blobs(6000, centers=6, n_features=10, cluster_std=2.0, random_state=4)
    x = x.astype(np.float32)
    local = KMeans(6, random_state=3).fit(LocalShards([x]))
    remote = KMeans(6, random_state=3).fit(x)
    assert local.n_shards_ == 1
    assert remote.n_shards_ == int(ray_session.cluster_resources()["CPU"]) == 2
    np.testing.assert_allclose(local.cluster_centers_, remote.cluster_centers_, rtol=1e-5,
                               atol=1e-5)
    assert np.array_equal(local.labels_, remote.labels_)


def test_small_array_stays_in_process_with_ray_running(ray_session):
    x, _ = make_blobs(500, centers=3, n_features=4, random_state=0)
    assert KMeans(3, random_state=0).fit(x).n_shards_ == 1


@pytest.mark.parametrize("d,k", [(4, 16), (16, 4), (8, 1)])
def test_nearest_centroids_equal_a_full_sort_on_both_product_paths(d, k):
    """More centroids than dimensions takes the ones-column product, fewer the added |c|^2;
    both give a full sort's two nearest, and the BLAS is left with its thread count."""
    from raypipe.segments import nearest
    rng = np.random.default_rng(d * 100 + k)
    x = rng.standard_normal((3000, d)).astype(np.float32)
    c = rng.standard_normal((k, d)).astype(np.float32)
    full = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(2)
    order = np.argsort(full, axis=1)
    threads = nearest.threads()
    labels, near, far = nearest.nearest2(x, c)
    assert (labels == order[:, 0]).mean() > 0.999
    np.testing.assert_allclose(near, full[np.arange(3000), order[:, 0]], rtol=1e-4, atol=1e-4)
    if k > 1:
        np.testing.assert_allclose(far, full[np.arange(3000), order[:, 1]], rtol=1e-4,
                                   atol=1e-4)
    else:
        assert np.isinf(far).all()
    d2, lab = nearest.assign(x, c, 3)
    assert (lab[:, :min(3, k)] == order[:, :min(3, k)]).mean() > 0.999
    assert nearest.threads() == threads


def test_each_doubtful_row_is_measured_by_one_job_only(monkeypatch):
    """Jobs run on threads and write their rows in place: no row may belong to two."""
    from raypipe.segments import lloyd
    monkeypatch.setattr(lloyd, "DOUBT_BLOCK", 128)
    monkeypatch.setattr(lloyd, "GROUP_SIZE", 3)
    seen = []
    real = lloyd.parallel_map

    def record(fn, jobs):
        seen.extend(jobs)
        return real(fn, jobs)

    monkeypatch.setattr(lloyd, "parallel_map", record)
    x, _ = make_blobs(4000, centers=6, n_features=6, cluster_std=1.0, center_box=(-60, 60),
                      random_state=1)
    x = np.vstack([x, np.random.default_rng(1).uniform(-80, 80, (400, 6))]).astype(np.float32)
    x = x[np.random.default_rng(2).permutation(len(x))]
    centroids = x[::110].copy()
    state, measured = None, 0
    for _ in range(4):
        seen.clear()
        state, (sums, counts) = lloyd.lloyd_step(x, state, centroids)
        rows = np.concatenate(seen) if seen else np.zeros(0, int)
        assert len(rows) == len(np.unique(rows))
        measured += len(rows)
        centroids = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    assert 0 < measured < 3 * len(x)


@pytest.mark.parametrize("sample_size", [2_000, 20_000])
def test_kmeans_parallel_keeps_about_ell_candidates_per_round_on_a_sample(monkeypatch,
                                                                          sample_size):
    """Each k-means|| round keeps about oversampling x k rows however small the seeding
    sample is: the round's draws must not be the ones that chose the sample."""
    from raypipe.segments import seeding
    kept, real = [], seeding.parallel_sample

    def count(*args):
        state, rows = real(*args)
        kept.append(len(rows))
        return state, rows

    monkeypatch.setattr(seeding, "parallel_sample", count)
    x, _ = make_blobs(20_000, centers=10, n_features=6, random_state=0)
    seeding.kmeans_parallel(LocalShards([x.astype(np.float32)]), 20,
                            np.random.default_rng(0), sample_size=sample_size)
    assert len(kept) == 2
    assert all(15 <= n <= 70 for n in kept), kept          # ell = 2 x 20 = 40 expected
