"""The Python API (raypipe/api.py) runs the README's example and gets the manifest the CLI
gets for the same settings; `raypipe.load` reads the tables and serves the users."""
import pytest

pytestmark = pytest.mark.slow

SETTINGS = ["user_repr=pooled", "kmeans.n_clusters=3", "embed.precision=fp32",
            "item_groups.n_groups=0", "recommend.strategies=[vector,segment]"]
SAME = ("config_hash", "rows", "item_rows", "users", "kmeans", "tables", "metrics",
        "item_groups", "blend", "embedding")


def test_the_python_api_equals_the_cli(ray_session, tmp_path):
    import raypipe
    from raypipe.cli import main
    from raypipe.config import SyntheticConfig
    from raypipe.events.synthetic import generate
    from raypipe.run.artifacts import read_manifest
    paths = generate(SyntheticConfig(users=400, items=200, events=8000, segments=3, seed=2),
                     str(tmp_path / "data"))
    source = {"kind": "events", "input": paths["events"], "items": paths["items"]}
    cli_out, api_out = str(tmp_path / "cli"), str(tmp_path / "api")
    argv = ["run", "--source", "events", "--input", paths["events"], "--items",
            paths["items"], "--output", cli_out, "--holdout", "last"]
    assert main(argv + [a for s in SETTINGS for a in ("--set", s)]) == 0

    # the README's example
    run = raypipe.Pipeline.from_config(source=source, overrides=SETTINGS + [
        "eval.holdout=last"], output=api_out).run()
    art = raypipe.load(run.output)
    profiles = art.table("profiles").to_pandas()
    service = art.service()

    cli = read_manifest(cli_out)
    assert run.manifest["config"] == {**cli["config"], "output": api_out}
    for key in SAME:
        assert run.manifest[key] == cli[key], key
    assert set(run.tables) == set(cli["tables"]) and run.tables["profiles"].endswith(
        "profiles.parquet")
    assert len(profiles) == cli["tables"]["profiles"]
    user = profiles.user_id.iloc[0]
    assert service.profile(user)["segment"]["id"] == profiles.segment.iloc[0]
    with pytest.raises(ValueError, match="no table 'nope'"):
        art.table("nope")
