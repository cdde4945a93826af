"""Segments people can read and use, on whole runs: stable ids across runs (segments/ids.py),
names, item groups, the report and segment export (readouts/)."""
import html.parser
import json
import os
import re

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from raypipe.events.synthetic import CATEGORIES

from raypipe.run.versions import current_run

pytestmark = pytest.mark.slow


def _table(folder, name, columns=None):
    return pq.read_table(os.path.join(current_run(folder), f"{name}.parquet"), columns=columns)


@pytest.fixture(scope="module")
def two_runs(pipeline_runs, tmp_path_factory):
    """The shared pooled run, and a second run of the same data with another K-means seed
    that takes its segment ids from the first."""
    from raypipe.config import PipelineConfig, SourceConfig, apply_overrides
    from raypipe.pipeline import run
    first, _, paths = pipeline_runs("pooled")
    out = str(tmp_path_factory.mktemp("reseeded") / "out")
    cfg = PipelineConfig(output=out, source=SourceConfig(kind="events", input=paths["events"],
                                                         items=paths["items"]))
    cfg = apply_overrides(cfg, ["kmeans.n_clusters=4", "eval.holdout=last", "recommend.k=10",
                                "embed.precision=fp32",
                                "user_repr=pooled", "kmeans.seed=7", "recommend.strategies=[vector,segment,blend,multi]",
                                f"kmeans.previous={first}"])
    return first, out, run(cfg), paths


def test_segment_ids_survive_a_reseeded_run(two_runs):
    first, second, manifest, _ = two_runs
    a = _table(first, "profiles", ["user_id", "segment"]).to_pandas().set_index("user_id")
    b = _table(second, "profiles", ["user_id", "segment"]).to_pandas().set_index("user_id")
    same = (a.segment == b.segment.reindex(a.index)).mean()
    assert same >= 0.95
    ids = manifest["segment_ids"]
    assert ids["reference"] == first and len(ids["moved"]) == 4
    assert ids["users"]["users_in_both_runs"] == len(a)
    assert abs(ids["users"]["changed_share"] - (1 - same)) < 1e-3
    seg = _table(second, "segments").to_pandas()
    assert sorted(seg.kmeans_cluster) == [0, 1, 2, 3]
    assert np.allclose(seg.moved, ids["moved"], atol=1e-6)


def test_segment_names_carry_their_category_words(pipeline_runs):
    out, _, paths = pipeline_runs("pooled")
    truth = pq.read_table(paths["users"]).to_pandas()
    found = _table(out, "profiles", ["user_id", "segment"]).to_pandas().merge(truth, on="user_id")
    names = _table(out, "segments").to_pandas().set_index("segment").name
    categories = list(CATEGORIES)
    for planted, users in found.groupby("true_segment"):
        segment = users.segment.mode()[0]
        nouns, adjectives = CATEGORIES[categories[planted % len(categories)]]
        words = {categories[planted % len(categories)]} | {
            w for phrase in nouns + adjectives for w in phrase.split()}
        name = set(re.split(r"[ /]+", names[segment]))
        assert name & words, (planted, names[segment], sorted(words))


def test_item_groups_are_named_and_in_items(pipeline_runs):
    out, manifest, _ = pipeline_runs("pooled")
    items = _table(out, "items").to_pandas()
    groups = manifest["item_groups"]
    assert groups["n_groups"] == 16 and sum(groups["sizes"]) == len(items)
    assert set(items.group) == set(range(16))
    assert items.groupby("group").group_name.nunique().eq(1).all()
    assert (items.group_name.str.len() > 0).all()


class _Sections(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.svg, self.stack, self.text = [], 0, [], {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg":
            self.svg += 1
        if tag in ("section", "div") and attrs.get("id"):
            self.ids.append(attrs["id"])
            self.text[attrs["id"]] = ""
        self.stack.append((tag, attrs.get("id")))

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        for _, ident in self.stack:
            if ident:
                self.text[ident] += data


def test_report_has_every_segment_its_charts_and_no_empty_section(two_runs, tmp_path):
    from raypipe.cli import main
    _, second, manifest, _ = two_runs
    page = tmp_path / "report.html"
    assert main(["report", "--artifacts", second, "--out", str(page)]) == 0
    parsed = _Sections()
    parsed.feed(page.read_text())
    segments = _table(second, "segments").to_pylist()
    for s in segments:
        assert f"segment-{s['segment']}" in parsed.ids
        assert s["name"] in parsed.text[f"segment-{s['segment']}"]
    for section in ("sizes", "map", "segments", "examples", "item-groups", "stability",
                    "quality"):
        assert section in parsed.ids and len(parsed.text[section].strip()) > 40, section
    assert parsed.svg >= 2 + len(segments)      # sizes, map, one funnel per segment
    assert "Hungarian" in parsed.text["stability"]
    # per segment, example users with their explained recommendations, as in the table
    examples = parsed.text["examples"]
    main_level = [s for s in segments if s.get("level") in (None, manifest["kmeans"]
                                                            ["n_clusters"])]
    assert examples.count("Segment ") >= len(main_level)
    recs = _table(second, "recommendations").to_pylist()
    shown = [r for r in recs if r["strategy"] == "blend" and r["rank"] == 1
             and r["user_id"] in examples]
    assert shown and all(r["explanation"] in examples for r in shown)
    assert page.read_text().count("<circle") >= 500


def test_segment_export_writes_that_segments_users(pipeline_runs, tmp_path):
    from raypipe.cli import main
    out, _, _ = pipeline_runs("pooled")
    profiles = _table(out, "profiles").to_pandas()
    target = tmp_path / "seg.csv"
    assert main(["segments", "export", "--segment", "1", "--artifacts", out,
                 "--out", str(target)]) == 0
    got = pacsv.read_csv(target).to_pandas()
    assert set(got.user_id.astype(str)) == set(profiles[profiles.segment == 1].user_id)
    assert (got.confidence.diff().dropna() <= 0).all()
    assert main(["segments", "export", "--segment", "9", "--artifacts", out,
                 "--out", str(tmp_path / "x.parquet")]) == 2


def test_multi_strategy_is_written_and_evaluated(pipeline_runs):
    out, manifest, _ = pipeline_runs("pooled")
    recs = _table(out, "recommendations", ["user_id", "strategy"]).to_pandas()
    assert set(recs.strategy) == {"vector", "segment", "blend", "multi"}
    assert recs[recs.strategy == "multi"].groupby("user_id").size().max() == 10
    metrics = json.loads(open(os.path.join(current_run(out), "metrics.json")).read())
    assert "multi" in metrics["strategies"]
