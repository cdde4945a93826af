"""config/space.py: `raypipe tune`'s search space (what may vary, how it is drawn) and the
config file the best trial is written as."""
import pytest
import yaml

from raypipe.config import PipelineConfig, load_config, non_defaults
from raypipe.config import space as spaces


def test_the_default_space_is_valid_and_starts_from_the_default_settings():
    space = spaces.check(spaces.DEFAULT_SPACE)
    start = spaces.point(PipelineConfig(), space)
    enc = PipelineConfig().encoder
    assert start["encoder.dim"] == enc.dim and start["encoder.lr"] == enc.lr
    # 0 (everything) is said as what it reads, the sequences' length, which is a choice
    assert start["encoder.max_length"] == PipelineConfig().sequences.max_length
    assert start["encoder.max_length"] in space["encoder.max_length"]["choice"]
    assert start["encoder.loss"] in space["encoder.loss"]["choice"]
    # every draw of the default space is a valid encoder (dim a multiple of heads)
    for dim in space["encoder.dim"]["choice"]:
        for heads in space["encoder.heads"]["choice"]:
            spaces.apply(PipelineConfig(), {"encoder.dim": dim, "encoder.heads": heads})


@pytest.mark.parametrize("space, message", [
    ({}, "empty"),
    ({"kmeans.n_clusters": {"choice": [2, 3]}}, "not an encoder"),
    ({"encoder.colour": {"choice": [1]}}, "not an encoder"),
    ({"encoder.validation_share": {"uniform": [0.1, 0.3]}}, "cannot vary"),
    ({"encoder.num_workers": {"choice": [1, 2]}}, "cannot vary"),
    ({"encoder.lr": {"normal": [0, 1]}}, "expected one of"),
    ({"encoder.lr": {"loguniform": [0, 1]}}, "low > 0"),
    ({"encoder.lr": {"uniform": [1, 0.5]}}, "low < high"),
    ({"encoder.dim": {"choice": []}}, "non-empty"),
])
def test_a_space_that_cannot_be_searched_is_refused_with_its_entry(space, message):
    with pytest.raises(ValueError, match=message):
        spaces.check(space)


def test_a_space_file_is_read_and_checked(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("encoder.dim: {choice: [16, 32]}\nencoder.layers: {randint: [1, 2]}\n")
    assert spaces.load_space(str(path)) == {"encoder.dim": {"choice": [16, 32]},
                                            "encoder.layers": {"randint": [1, 2]}}
    path.write_text("- encoder.dim\n")
    with pytest.raises(ValueError, match="mapping"):
        spaces.load_space(str(path))


def test_max_length_choices_stop_at_the_sequences_length():
    cfg = load_config(None, ["sequences.max_length=25"])
    space = spaces.bounded({"encoder.max_length": {"choice": [10, 20, 30, 50]}}, cfg)
    assert space["encoder.max_length"]["choice"] == [10, 20, 25]


def test_tune_samplers_draw_inside_the_given_ranges():
    from ray.tune.search.sample import Categorical, Float, Integer

    from raypipe.jobs.tune import to_tune
    out = to_tune({"encoder.dim": {"choice": [8, 16]},
                          "encoder.lr": {"loguniform": [1e-4, 1e-2]},
                          "encoder.dropout": {"uniform": [0.1, 0.2]},
                          "encoder.layers": {"randint": [1, 3]}})
    assert isinstance(out["encoder.dim"], Categorical)
    assert isinstance(out["encoder.lr"], Float) and isinstance(out["encoder.dropout"], Float)
    layers = out["encoder.layers"]
    assert isinstance(layers, Integer)
    drawn = set(layers.sample(size=400, random_state=0))
    assert drawn == {1, 2, 3}                   # both ends included, as the doc says
    lr = out["encoder.lr"].sample(size=200, random_state=0)
    assert min(lr) >= 1e-4 and max(lr) <= 1e-2


def test_a_trials_parameters_set_typed_fields():
    import numpy as np
    cfg = spaces.apply(PipelineConfig(), {"encoder.lr": np.float64(1e-4),
                                          "encoder.dim": np.int64(32),
                                          "encoder.loss": "sampled",
                                          "encoder.max_length": 20})
    assert cfg.encoder.lr == 1e-4 and isinstance(cfg.encoder.lr, float)
    assert cfg.encoder.dim == 32 and isinstance(cfg.encoder.dim, int)
    assert cfg.encoder.loss == "sampled" and cfg.encoder.max_length == 20


def test_the_best_config_file_gives_the_same_config_back(tmp_path):
    cfg = spaces.apply(load_config(None, ["output=/tmp/x", "eval.holdout=last",
                                          "recommend.strategies=[vector,blend]",
                                          "user.event_weights={view: 1, purchase: 3}"]),
                       {"encoder.lr": 0.0012, "encoder.dim": 32})
    diff = non_defaults(cfg)
    assert diff["encoder"] == {"lr": 0.0012, "dim": 32}
    assert "kmeans" not in diff                          # only what differs
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(diff))
    assert load_config(str(path)) == cfg
    assert non_defaults(PipelineConfig()) == {}


def test_the_encoder_reads_at_most_the_sequences_length():
    from raypipe.vectors.users import encoder_width, training_sections
    assert encoder_width(PipelineConfig()) == 50
    assert encoder_width(load_config(None, ["encoder.max_length=20"])) == 20
    assert encoder_width(load_config(None, ["encoder.max_length=80"])) == 50
    assert training_sections(load_config(None, ["encoder.max_length=20"]))["width"] == 20
    with pytest.raises(ValueError, match="max_length"):
        load_config(None, ["encoder.max_length=-1"])


def test_the_best_config_file_names_local_paths_absolutely(tmp_path, monkeypatch):
    from raypipe.config import SourceConfig
    from raypipe.jobs.tune import located
    monkeypatch.chdir(tmp_path)
    cfg = located(PipelineConfig(output="out", source=SourceConfig(
        kind="events", input="logs/events.parquet", items="s3://bucket/items.parquet")))
    assert cfg.output == str(tmp_path / "out")
    assert cfg.source.input == str(tmp_path / "logs" / "events.parquet")
    assert cfg.source.items == "s3://bucket/items.parquet"        # URIs as they are
    assert located(PipelineConfig()).synthetic_dir == str(tmp_path / "data")
