"""config/: defaults, the stable hash, dotted overrides, YAML files and errors that name the
values."""
import pytest

from raypipe.config import PipelineConfig, SourceConfig, apply_overrides, load_config


def test_defaults_are_valid_and_hash_is_stable():
    assert PipelineConfig().hash() == PipelineConfig().hash()
    assert PipelineConfig().user_repr == "encoder"


def test_dotted_overrides_parse_values_as_yaml():
    cfg = load_config(None, ["kmeans.n_clusters=5", "user_repr=text", "clean.strict=true",
                             "recommend.strategies=[vector]"])
    assert cfg.kmeans.n_clusters == 5 and cfg.user_repr == "text" and cfg.clean.strict
    assert cfg.recommend.strategies == ("vector",)
    assert cfg.hash() != PipelineConfig().hash()


def test_exponent_floats_are_numbers_on_the_command_line_and_in_files(tmp_path):
    # YAML 1.1 reads 1e-6 (no dot) as a string
    cfg = load_config(None, ["encoder.lr=1e-6", "recommend.blend_segment=5e-2"])
    assert cfg.encoder.lr == 1e-6 and cfg.recommend.blend_segment == 0.05
    path = tmp_path / "c.yaml"
    path.write_text("encoder:\n  lr: 3e-4\n")
    assert load_config(str(path), []).encoder.lr == 3e-4
    with pytest.raises(ValueError, match="user_repr"):     # strings stay strings elsewhere
        load_config(None, ["user_repr=1e-6"])


def test_output_location_does_not_change_the_hash():
    assert load_config(None, ["output=/elsewhere"]).hash() == PipelineConfig().hash()


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kmeans:\n  n_clusters: 4\n  seed: 3\nsequences:\n  max_length: 7\n")
    cfg = load_config(str(path), ["kmeans.n_clusters=6"])
    assert (cfg.kmeans.n_clusters, cfg.kmeans.seed, cfg.sequences.max_length) == (6, 3, 7)


def test_column_mapping_override_merges_into_dict():
    cfg = apply_overrides(PipelineConfig(), ["source.columns.user_id=customer"])
    assert cfg.source.columns == {"user_id": "customer"}


def test_a_section_takes_all_its_overrides_at_once_whatever_their_order():
    # cold items need the holdout: checked once both are set, in either order
    for order in (["eval.cold_share=0.1", "eval.holdout=last"],
                  ["eval.holdout=last", "eval.cold_share=0.1"]):
        cfg = apply_overrides(PipelineConfig(), order + ["user.event_weights.view=2"])
        assert (cfg.eval.holdout, cfg.eval.cold_share) == ("last", 0.1)
        assert cfg.user.event_weights["view"] == 2 and len(cfg.user.event_weights) > 1
    with pytest.raises(ValueError, match="cold_share needs eval.holdout=last"):
        apply_overrides(PipelineConfig(), ["eval.cold_share=0.1"])
    assert apply_overrides(PipelineConfig(), ["kmeans.n_clusters=3", "kmeans.n_clusters=5"]
                           ).kmeans.n_clusters == 5


@pytest.mark.parametrize("override, message", [
    ("kmeans.n_clusters=0", "n_clusters=0"),
    ("kmeans.nope=1", "unknown config key 'nope'"),
    ("user_repr=magic", "user_repr='magic'"),
    ("recommend.blend_segment=-1", "blend_segment=-1"),
    ("recommend.cooccurrence_top=0", "cooccurrence_top=0"),
    ("eval.holdout=first", "eval.holdout='first'"),
    ("no_equals_sign", "key=value"),
])
def test_bad_values_are_named(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        load_config(None, [override])


def test_unknown_yaml_keys_are_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kmeans:\n  clusters: 4\n")
    with pytest.raises(ValueError, match="clusters"):
        load_config(str(path))


def test_source_needs_its_inputs():
    with pytest.raises(ValueError, match="needs an input"):
        SourceConfig(kind="amazon-p5")
    with pytest.raises(ValueError, match="item catalogue"):
        SourceConfig(kind="events", input="x.parquet")
