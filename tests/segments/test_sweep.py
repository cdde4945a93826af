"""segments/sweep.py and jobs/sweep.py: choosing K on planted mixtures with unequal sizes
(well separated: the planted K; overlapping: within one), the rule, the Ray tasks equal to
the in-process sweep, the stage's table."""
import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from raypipe.segments.kmeans import KMeans
from raypipe.segments.sweep import SweepConfig, choose, sweep

CFG = SweepConfig(k_min=2, k_max=14, resamples=3, seed=0)


def planted(k: int, std: float, seed: int = 0, n: int = 6000, d: int = 24):
    """k Gaussian groups whose sizes fall as rank^-0.8 (the largest ~6x the smallest)."""
    sizes = np.arange(1, k + 1) ** -0.8
    sizes = np.maximum((n * sizes / sizes.sum()).astype(int), 40)
    x, y = make_blobs(sizes.tolist(), n_features=d, cluster_std=std, center_box=(-8, 8),
                      random_state=seed)
    return x.astype(np.float32), y


@pytest.mark.parametrize("k", [3, 6, 11])
def test_well_separated_planted_k_is_chosen(k):
    x, y = planted(k, std=1.0, seed=k)
    result = sweep(x, CFG)
    assert result["chosen_k"] == k, [(r["k"], round(r["silhouette"], 3),
                                      round(r["stability"], 3)) for r in result["rows"]]
    labels = KMeans(k, random_state=0).fit_predict(x)
    assert adjusted_rand_score(y, labels) >= 0.9


@pytest.mark.parametrize("k", [4, 7])
def test_overlapping_planted_k_is_chosen_within_one(k):
    x, y = planted(k, std=2.6, seed=k + 100)
    chosen = sweep(x, CFG)["chosen_k"]
    assert abs(chosen - k) <= 1, chosen


def test_sweep_rows_hold_every_criterion_for_every_k():
    x, _ = planted(4, std=1.0, seed=1, n=1500)
    result = sweep(x, SweepConfig(k_min=2, k_max=6, resamples=2))
    assert [r["k"] for r in result["rows"]] == [2, 3, 4, 5, 6]
    assert result["trials"] == 5 * 3 and result["sample_rows"] == len(x)
    for r in result["rows"]:
        assert -1 <= r["silhouette"] <= 1 and r["calinski_harabasz"] > 0
        assert r["davies_bouldin"] > 0 and -0.5 <= r["stability"] <= 1 and r["inertia"] > 0


def test_rule_highest_silhouette_among_the_stable():
    rows = [{"k": 2, "silhouette": 0.5, "stability": 0.95},
            {"k": 3, "silhouette": 0.7, "stability": 0.6},     # best silhouette, unstable
            {"k": 4, "silhouette": 0.6, "stability": 0.85}]
    assert choose(rows, 0.8) == 4
    assert choose(rows, 0.99) == 2        # none stable enough: the most stable
    with pytest.raises(ValueError, match="k_min"):
        SweepConfig(k_min=1)
    with pytest.raises(ValueError, match="at least"):
        sweep(np.zeros((10, 3), np.float32), SweepConfig(k_max=8))


def test_sweep_on_ray_equals_the_in_process_sweep(ray_session):
    from raypipe.jobs.sweep import sweep_on_ray
    x, _ = planted(3, std=1.5, seed=2, n=1200)
    cfg = SweepConfig(k_min=2, k_max=5, resamples=2)
    here, there = sweep(x, cfg), sweep_on_ray(x, cfg)
    assert here["chosen_k"] == there["chosen_k"]
    for a, b in zip(here["rows"], there["rows"]):
        assert a["inertia"] == pytest.approx(b["inertia"], rel=1e-6)
        assert a["stability"] == pytest.approx(b["stability"])


def generated_users(tmp_path, k: int, focus: float, skew: float = 0.5, users: int = 2500):
    """`raypipe generate` with unequal segments -> pooled user vectors (the shipped text
    model's item vectors, event-weighted and recency-decayed as the pipeline pools them)
    and each user's planted segment."""
    import pandas as pd

    from raypipe.config import SyntheticConfig, UserConfig
    from raypipe.events.synthetic import generate
    from raypipe.vectors.embed import Embedder
    from raypipe.vectors.pooling import history_weights, pool
    paths = generate(SyntheticConfig(users=users, items=1200, events=24 * users, segments=k,
                                     segment_skew=skew, focus=focus), str(tmp_path / "gen"))
    items, truth = pd.read_parquet(paths["items"]), pd.read_parquet(paths["users"])
    vectors = Embedder(precision="fp32").encode(
        (items.title + " " + items.category + " " + items.brand).tolist())
    events = pd.read_parquet(paths["events"]).sort_values(["user_id", "timestamp"],
                                                          kind="stable")
    rows, index, types = pd.Index(items.item_id), [], []
    for _, part in events.groupby("user_id", sort=True):
        part = part.tail(50)
        index.append(rows.get_indexer(part.item_id))
        types.append(part.event_type.tolist())
    x = pool(index, history_weights(types, UserConfig()), vectors)
    y = truth.set_index("user_id").loc[sorted(events.user_id.unique())].true_segment.to_numpy()
    return x, y


@pytest.mark.slow
@pytest.mark.parametrize("k, focus, tolerance", [(5, 0.85, 0), (9, 0.85, 0), (6, 0.55, 1)])
def test_generated_segments_planted_k_is_chosen(tmp_path, k, focus, tolerance):
    x, y = generated_users(tmp_path, k, focus)
    assert len(np.unique(np.bincount(y))) == k            # unequal sizes
    chosen = sweep(x, SweepConfig(k_min=2, k_max=12, resamples=3))["chosen_k"]
    assert abs(chosen - k) <= tolerance, chosen
    if tolerance == 0:                                    # well separated: the segments too
        labels = KMeans(chosen, n_init=3, random_state=0).fit_predict(x)
        assert adjusted_rand_score(y, labels) >= 0.9


def test_few_users_narrow_the_range_or_are_refused(ray_session):
    from raypipe.config import KMeansConfig
    from raypipe.jobs.kmeans_tasks import RayShards
    from raypipe.jobs.segments import sweep_segments
    x, _ = planted(3, std=1.0, seed=4, n=60)            # 3 x 40 rows: under 4 x k_max
    sweep = KMeansConfig(n_clusters="auto", sweep_resamples=2).sweep()
    result = sweep_segments(RayShards.from_arrays(np.array_split(x, 2)), sweep)
    assert result["k_range"] == [2, len(x) // 4] and result["chosen_k"] == 3
    with pytest.raises(ValueError, match="too few to choose"):
        sweep_segments(RayShards.from_arrays([x[:6]]), sweep)
