"""segments/kmeans.KMeans as a scikit-learn estimator: scikit-learn's own checks, Pipelines
and GridSearchCV, sample weights, restarts (their spread, and the same result whether they
run one after another or concurrently on Ray)."""
import numpy as np
import pytest
from sklearn.datasets import make_blobs

from raypipe.segments.kmeans import KMeans, LocalShards

# scikit-learn's own KMeans declares the same two: k-means' seeding draws rows at random,
# so weights of 2 and repeated rows give different seeds (see the weighted-Lloyd test below).
EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data":
        "seeding draws differ between weighted and repeated rows (as scikit-learn's KMeans)",
    "check_sample_weight_equivalence_on_sparse_data": "sparse input is not accepted",
}


def test_scikit_learn_check_estimator_passes():
    from sklearn.utils.estimator_checks import check_estimator
    results = check_estimator(KMeans(), expected_failed_checks=EXPECTED_FAILURES, on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:300]) for r in results
              if r["status"] == "failed"]
    assert not failed, failed
    assert sum(r["status"] == "passed" for r in results) >= 50


def test_pipeline_and_grid_search():
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    x, _ = make_blobs(600, centers=4, n_features=5, random_state=0)
    pipe = make_pipeline(StandardScaler(), KMeans(2, random_state=0))
    search = GridSearchCV(pipe, {"kmeans__n_clusters": [2, 4, 6]}, cv=3).fit(x)
    # score = -inertia: more clusters always score higher on held-out rows here.
    assert search.best_params_ == {"kmeans__n_clusters": 6}
    distances = pipe.fit(x).transform(x)
    assert distances.shape == (600, 2) and (distances >= 0).all()
    assert np.array_equal(distances.argmin(1), pipe.predict(x))


def test_integer_weights_equal_repeated_rows_from_the_same_seeds():
    x, _ = make_blobs(400, centers=5, n_features=4, cluster_std=2.5, random_state=1)
    w = np.random.default_rng(0).integers(0, 4, len(x))
    init = x[np.flatnonzero(w)[:5]].astype(np.float32)
    weighted = KMeans(5, init=init, tol=0).fit(x, sample_weight=w)
    repeated = KMeans(5, init=init, tol=0).fit(np.repeat(x, w, axis=0))
    np.testing.assert_allclose(weighted.cluster_centers_, repeated.cluster_centers_,
                               rtol=1e-5, atol=1e-5)
    assert weighted.inertia_ == pytest.approx(repeated.inertia_, rel=1e-5)
    assert weighted.score(x, sample_weight=w) == pytest.approx(-weighted.inertia_, rel=1e-5)


def test_weights_pull_centroids():
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    km = KMeans(2, random_state=0).fit(x, sample_weight=[1, 3, 1, 1])
    assert sorted(km.cluster_centers_[:, 0].round(4)) == [0.75, 10.5]
    with pytest.raises(ValueError, match="non-zero weights"):
        KMeans(2).fit(x, sample_weight=[0, 0, 0, 1])


def test_restarts_report_their_spread_and_agreement():
    x, _ = make_blobs(3000, centers=10, n_features=6, cluster_std=3.0, random_state=2)
    km = KMeans(10, n_init=4, init="random", random_state=0).fit(x)
    inertias = [r["inertia"] for r in km.restarts_]
    assert len(inertias) == 4 and km.inertia_ == min(inertias)
    assert [r["run"] for r in km.restarts_] == [0, 1, 2, 3]
    assert 0.3 < km.restart_ari_ <= 1.0
    assert KMeans(10, random_state=0).fit(x).restart_ari_ is None


def test_restarts_on_ray_run_concurrently_with_the_same_result(ray_session):
    from raypipe.jobs.kmeans_tasks import RayShards
    x, _ = make_blobs(3000, centers=6, n_features=6, cluster_std=2.5, random_state=3)
    parts = np.array_split(x.astype(np.float32), 3)
    local = KMeans(6, n_init=3, random_state=5).fit(LocalShards(parts))
    remote = KMeans(6, n_init=3, random_state=5).fit(RayShards.from_arrays(parts))
    assert RayShards.concurrent and not LocalShards.concurrent
    assert [r["inertia"] for r in remote.restarts_] == pytest.approx(
        [r["inertia"] for r in local.restarts_], rel=1e-6)
    np.testing.assert_allclose(local.cluster_centers_, remote.cluster_centers_, rtol=1e-5)
    assert local.restart_ari_ == pytest.approx(remote.restart_ari_)
