"""kmeans.n_clusters=auto on a whole run: `raypipe generate` with unequal, well separated
segments; the sweep picks the planted K, lands in segment_sweep.parquet, the manifest and the
report; `raypipe segments sweep` on the finished run agrees; int8 calibration is recorded."""
import json
import os

import pyarrow.parquet as pq
import pytest

from raypipe.run.versions import current_run

pytestmark = pytest.mark.slow
PLANTED = 5


@pytest.fixture(scope="module")
def auto_run(ray_session, tmp_path_factory):
    from raypipe.config import PipelineConfig, SourceConfig, SyntheticConfig, apply_overrides
    from raypipe.events.synthetic import generate
    from raypipe.pipeline import run
    root = tmp_path_factory.mktemp("auto-k")
    paths = generate(SyntheticConfig(users=1500, items=600, events=36000, segments=PLANTED,
                                     segment_skew=0.5, focus=0.85, seed=3), str(root / "data"))
    cfg = PipelineConfig(output=str(root / "out"), source=SourceConfig(
        kind="events", input=paths["events"], items=paths["items"]))
    cfg = apply_overrides(cfg, ["user_repr=pooled", "kmeans.n_clusters=auto",
                                "kmeans.sweep_k_max=9", "kmeans.sweep_resamples=3",
                                "kmeans.n_init=3", "item_groups.n_groups=4",
                                # 600 items: int8 is tried from 6x the calibration sample
                                "embed.calibration_texts=96",
                                "recommend.strategies=[vector,segment]"])
    return cfg.output, run(cfg), paths


def test_the_sweep_picks_the_planted_k_and_lands_everywhere(auto_run):
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score
    out, manifest, paths = auto_run
    assert manifest["sweep"]["chosen_k"] == PLANTED == manifest["kmeans"]["n_clusters"]
    assert manifest["sweep"]["k_range"] == [2, 9] and manifest["sweep"]["trials"] == 8 * 4
    table = pq.read_table(os.path.join(current_run(out), "segment_sweep.parquet")).to_pylist()
    assert [r["k"] for r in table] == list(range(2, 10))
    assert [r["k"] for r in table if r["chosen"]] == [PLANTED]
    profiles = pq.read_table(os.path.join(current_run(out), "profiles.parquet"),
                             columns=["user_id", "segment"]).to_pandas()
    merged = profiles.merge(pd.read_parquet(paths["users"]), on="user_id")
    assert adjusted_rand_score(merged.true_segment, merged.segment) >= 0.9
    restarts = manifest["kmeans"]["restarts"]
    assert restarts["n_init"] == 3 and len(restarts["inertia"]) == 3
    assert 0 <= restarts["inertia_spread"] and 0.5 <= restarts["mean_ari"] <= 1


def test_the_report_draws_the_sweep(auto_run, tmp_path):
    from raypipe.cli import main
    out, _, _ = auto_run
    page = tmp_path / "report.html"
    assert main(["report", "--artifacts", out, "--out", str(page)]) == 0
    text = page.read_text()
    section = text[text.index("<section id='choosing'>"):]
    section = section[:section.index("</section>")]
    assert section.count("<svg") == 5 and section.count(f"K={PLANTED}") == 5
    assert "restarts" in section and "chosen" in section


def test_segments_sweep_command_agrees(auto_run, tmp_path, capsys):
    from raypipe.cli import main
    out, manifest, _ = auto_run
    csv = tmp_path / "sweep.csv"
    assert main(["segments", "sweep", "--artifacts", out, "--k-max", "9", "--resamples", "3",
                 "--out", str(csv)]) == 0
    said = capsys.readouterr().out
    assert f"K = {PLANTED} (--set kmeans.n_clusters={PLANTED})" in said
    assert csv.read_text().count("\n") == 1 + 8


def test_embedding_precision_and_calibration_in_the_manifest(auto_run):
    from raypipe.vectors.embed import cpu_has_bf16
    _, manifest, _ = auto_run
    items = manifest["embedding"]["items"]
    if cpu_has_bf16():
        assert items == {"precision": "bf16", "texts": 600, "calibration": None}
        return
    cal = items["calibration"]
    assert items["texts"] == 600 and cal["texts"] == 96
    assert cal["layers"] >= 36 and cal["bar"] == 0.99
    assert items["precision"] == ("int8" if cal["cosine_mean"] >= 0.99 else "fp32")
    assert json.dumps(manifest)           # all of it plain JSON
