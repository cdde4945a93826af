"""The Python API (raypipe/api.py) runs the README's example and gets the manifest the CLI
gets for the same settings; `raypipe.load` reads the tables and serves the users. The CLI
runs as a user runs it, in its own process, and its console stays short."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

SETTINGS = ["user_repr=pooled", "kmeans.n_clusters=3", "embed.precision=fp32",
            "item_groups.n_groups=0", "recommend.strategies=[vector,segment]"]
SAME = ("config_hash", "rows", "item_rows", "users", "kmeans", "tables", "metrics",
        "item_groups", "blend", "embedding")


def test_the_python_api_equals_the_cli(ray_session, tmp_path):
    import raypipe
    from raypipe.config import SyntheticConfig
    from raypipe.events.synthetic import generate
    from raypipe.run.artifacts import read_manifest
    paths = generate(SyntheticConfig(users=400, items=200, events=8000, segments=3, seed=2),
                     str(tmp_path / "data"))
    source = {"kind": "events", "input": paths["events"], "items": paths["items"]}
    # One output: the API's run finds every stage the CLI's finished (their keys hash the
    # settings each stage reads, so any difference in the config would redo them).
    cli_out = api_out = str(tmp_path / "out")
    argv = ["run", "--source", "events", "--input", paths["events"], "--items",
            paths["items"], "--output", cli_out, "--holdout", "last"]
    done = subprocess.run([sys.executable, "-m", "raypipe.cli", *argv,
                           *[a for s in SETTINGS for a in ("--set", s)]],
                          capture_output=True, text=True, timeout=900)
    console = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, done.stderr[-3000:]
    # a line per stage start and end, the summary, Ray's start-up: no per-dataset chatter
    assert len(console) < 60, "\n".join(console)
    assert not [line for line in console if "streaming_executor" in line]
    assert sum("raypipe: stage" in line for line in console) >= 14
    cli = read_manifest(cli_out)

    # the README's example
    run = raypipe.Pipeline.from_config(source=source, overrides=SETTINGS + [
        "eval.holdout=last"], output=api_out).run()
    art = raypipe.load(run.output)
    profiles = art.table("profiles").to_pandas()
    service = art.service()

    written = read_manifest(api_out)                          # a new version, the API's
    assert written["created_at"] == run.manifest["created_at"] and written != cli
    assert run.manifest["config"] == cli["config"]
    assert all(s["reused"] for s in run.manifest["stages"].values()), run.manifest["stages"]
    for key in SAME:       # sums over shards may differ in the last bits
        assert rounded(run.manifest[key]) == rounded(cli[key]), key
    assert set(run.tables) == set(cli["tables"]) and run.tables["profiles"].endswith(
        "profiles.parquet")
    assert len(profiles) == cli["tables"]["profiles"]
    user = profiles.user_id.iloc[0]
    assert service.profile(user)["segment"]["id"] == profiles.segment.iloc[0]
    with pytest.raises(ValueError, match="no table 'nope'"):
        art.table("nope")


def rounded(value):
    """Floats to 9 significant digits, recursively."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value
