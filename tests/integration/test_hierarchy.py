"""The segment hierarchy on a whole run (kmeans.levels): every level a cut of one tree, in
the centroids, segments and profiles tables, the report, the service and `segments export`;
ids kept at every level when the segments are made again with another seed."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from raypipe.run.versions import current_run

pytestmark = pytest.mark.slow
PLANTED, LEVELS, MAIN = 4, [2, 4, 8, 16], 4


@pytest.fixture(scope="module")
def two_runs(ray_session, tmp_path_factory):
    """The same log twice into one output; the second makes its segments with another seed
    and keeps the first run's ids."""
    from raypipe.config import PipelineConfig, SourceConfig, SyntheticConfig, apply_overrides
    from raypipe.events.synthetic import generate
    from raypipe.pipeline import run
    root = tmp_path_factory.mktemp("hierarchy")
    paths = generate(SyntheticConfig(users=1200, items=500, events=30000, segments=PLANTED,
                                     segment_skew=0.5, focus=0.85, seed=5), str(root / "data"))
    cfg = apply_overrides(PipelineConfig(output=str(root / "out"), source=SourceConfig(
        kind="events", input=paths["events"], items=paths["items"])), [
        "user_repr=pooled", f"kmeans.n_clusters={MAIN}", f"kmeans.levels={LEVELS}",
        "kmeans.n_init=3", "embed.precision=fp32", "item_groups.n_groups=0",
        "recommend.strategies=[vector,segment]"])
    first = run(cfg)
    first_tables = {name: table(cfg.output, name) for name in ("profiles", "segments")}
    second = run(apply_overrides(cfg, ["kmeans.seed=1"]))
    return cfg.output, first, first_tables, second, paths


def table(out, name):
    return pd.read_parquet(os.path.join(current_run(out), f"{name}.parquet"))


def test_every_level_is_a_cut_and_every_node_has_a_name(two_runs):
    out, _, _, manifest, paths = two_runs
    assert manifest["hierarchy"]["levels"] == LEVELS and manifest["kmeans"]["n_clusters"] == MAIN
    segments = table(out, "segments")
    assert sorted(segments.groupby("level").size().items()) == [(lv, lv) for lv in LEVELS]
    assert segments[segments.level == LEVELS[0]].parent.isna().all()
    assert (segments.name.str.len() > 0).all() and (segments["size"] > 0).all()
    for upper, lower in zip(LEVELS, LEVELS[1:]):       # a node's users are its children's
        kids = segments[segments.level == lower].groupby("parent")["size"].sum()
        sizes = segments[segments.level == upper].set_index("segment")["size"]
        assert kids.sort_index().tolist() == sizes.sort_index().tolist()
    profiles = table(out, "profiles")
    levels = np.stack(profiles["levels"].to_numpy())
    assert (levels[:, LEVELS.index(MAIN)] == profiles.segment).all()
    parent = {(r.level, r.segment): r.parent for r in segments.itertuples()}
    for j in range(1, len(LEVELS)):
        assert all(parent[(LEVELS[j], f)] == c for c, f in zip(levels[:, j - 1], levels[:, j]))
    centroids = table(out, "centroids")
    assert len(centroids) == sum(LEVELS) and centroids[centroids["main"]].level.unique() == [MAIN]


def test_the_main_level_finds_the_planted_segments(two_runs):
    from sklearn.metrics import adjusted_rand_score
    out, _, _, manifest, paths = two_runs
    merged = table(out, "profiles").merge(pd.read_parquet(paths["users"]), on="user_id")
    assert adjusted_rand_score(merged.true_segment, merged.segment) >= 0.9


def test_ids_are_kept_at_every_level(two_runs):
    out, first, before, second, _ = two_runs
    assert second["segment_ids"]["reference"] == out
    after = table(out, "profiles")
    both = before["profiles"].merge(after, on="user_id", suffixes=("_1", "_2"))
    raw = {lv: table_raw(before["segments"], lv) for lv in LEVELS}
    raw_after = {lv: table_raw(table(out, "segments"), lv) for lv in LEVELS}
    kept_somewhere = False
    for j, level in enumerate(LEVELS):
        a = np.stack(both.levels_1.to_numpy())[:, j]
        b = np.stack(both.levels_2.to_numpy())[:, j]
        changed = float((a != b).mean())
        # without the matching, each run's own numbering (K-means' or the tree's)
        unmatched = float((raw[level][a] != raw_after[level][b]).mean())
        assert changed <= unmatched + 1e-9
        kept_somewhere |= changed < unmatched
        stats = second["segment_ids"] if level == MAIN else \
            second["segment_ids"]["levels"][str(level)]
        assert stats["reference"] == out and stats["users"]["changed_share"] == \
            pytest.approx(changed, abs=1e-4)
        if level <= PLANTED:                    # the planted groups: the same users
            assert changed <= 0.05
    assert kept_somewhere


def table_raw(segments, level):
    rows = segments[segments.level == level].sort_values("segment")
    return rows.kmeans_cluster.to_numpy()


def test_the_report_draws_the_tree(two_runs, tmp_path):
    from raypipe.cli import main
    out = two_runs[0]
    page = tmp_path / "report.html"
    assert main(["report", "--artifacts", out, "--out", str(page)]) == 0
    text = page.read_text()
    section = text[text.index("<section id='hierarchy'>"):]
    section = section[:section.index("</section>")]
    assert section.count("<rect") == sum(LEVELS)
    assert section.count("<line") == sum(LEVELS[1:])
    assert section.count("<li>") == sum(LEVELS)         # every node in the outline


def test_the_service_answers_every_level(two_runs):
    from serve.service import ProfileService
    out = two_runs[0]
    service = ProfileService(out)
    profiles = table(out, "profiles").set_index("user_id")
    segments = table(out, "segments").set_index(["level", "segment"])
    seqs = table(out, "sequences").set_index("user_id")
    assert service.info()["levels"] == LEVELS
    for user in profiles.index[:20]:
        p = service.profile(user)
        assert [(s["level"], s["id"]) for s in p["levels"]] == \
            list(zip(LEVELS, profiles.loc[user, "levels"]))
        assert [s["name"] for s in p["levels"]] == \
            [segments.loc[(s["level"], s["id"]), "name"] for s in p["levels"]]
        assert p["segment"]["name"] == segments.loc[(MAIN, p["segment"]["id"]), "name"]
        events = [{"item_id": i, "event_type": e, "timestamp": int(t)} for i, e, t in
                  zip(*(seqs.loc[user, c] for c in ("item_ids", "event_types", "timestamps")))]
        answer = service.answer(service.plan(events), None, 5, "vector")
        assert answer["profile"]["levels"] == p["levels"]


def test_segments_export_takes_a_level(two_runs, tmp_path, capsys):
    from raypipe.cli import main
    out = two_runs[0]
    profiles = table(out, "profiles")
    coarse = np.stack(profiles["levels"].to_numpy())[:, 0]
    dest = tmp_path / "coarse.csv"
    assert main(["segments", "export", "--segment", "1", "--level", "2", "--artifacts", out,
                 "--out", str(dest)]) == 0
    got = pd.read_csv(dest)
    assert sorted(got.user_id) == sorted(profiles.user_id[coarse == 1])
    assert (got.level == 2).all() and (got.segment == 1).all()
    assert main(["segments", "export", "--segment", "0", "--level", "3", "--artifacts", out,
                 "--out", str(dest)]) == 2
    assert "level 3 is not one of this run's levels [2, 4, 8, 16]" in capsys.readouterr().err
    with open(os.path.join(current_run(out), "manifest.json")) as f:
        assert json.load(f)["hierarchy"]["tree"] == "ward"
