"""Pseudonymised runs hold no raw user id anywhere; `forget` removes a user from every table
and the service then answers 404 for them."""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raypipe.run.privacy import KEY_ENV, KEY_FILE_ENV, Pseudonymizer, load_key

KEY = "a-test-key-of-at-least-16-chars"


def test_pseudonyms_are_keyed_stable_and_keep_nulls():
    p, other = Pseudonymizer(KEY.encode()), Pseudonymizer(b"another-key-0123456789")
    ids = pa.chunked_array([["u1", None, "u2"], ["u1"]])
    out = p.array(ids).to_pylist()
    assert out[0] == out[3] == p.one("u1") and out[1] is None and out[2] != out[0]
    assert len(out[0]) == 32 and "u1" not in out[0]
    assert other.one("u1") != p.one("u1")
    assert KEY not in repr(p)


def test_the_key_comes_from_the_environment_or_a_secret_file(monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    with pytest.raises(ValueError, match=KEY_ENV):
        load_key()
    secret = tmp_path / "key"
    secret.write_text(KEY + "\n")
    monkeypatch.setenv(KEY_FILE_ENV, str(secret))
    assert load_key() == KEY.encode()
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(ValueError, match="16"):
        load_key()


def strings(value):
    """Every string inside a (nested) value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings(v)


def all_strings(out: str) -> set[str]:
    found = set()
    for root, _, files in os.walk(out):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(".parquet"):
                found.update(strings(pq.read_table(path).to_pylist()))
            elif name.endswith(".json"):
                with open(path) as f:
                    found.update(strings(json.load(f)))
    return found


def any_file_mentions(root: str, text: str, skip: str) -> list:
    """Every file under `root` (but `skip`, the input logs) that holds `text`: Parquet by
    its values, any other file by its bytes."""
    found = []
    for folder, _, names in os.walk(root):
        if os.path.relpath(folder, root).split(os.sep)[0] == skip:
            continue
        for name in names:
            path = os.path.join(folder, name)
            if name.endswith(".parquet"):
                hit = any(text in v for v in strings(pq.read_table(path).to_pylist()))
            else:
                with open(path, "rb") as f:
                    hit = text.encode() in f.read()
            if hit:
                found.append(path)
    return found


@pytest.fixture(scope="module")
def pseudonymised_run(ray_session, tmp_path_factory):
    """A small pooled run with pseudonymisation on; the log also has quarantined rows."""
    from raypipe.config import PipelineConfig, SourceConfig, SyntheticConfig, apply_overrides
    from raypipe.pipeline import run
    from raypipe.events.synthetic import generate
    root = tmp_path_factory.mktemp("privacy")
    paths = generate(SyntheticConfig(users=200, items=100, events=4000, segments=2, seed=7),
                     str(root / "data"))
    events = pq.read_table(paths["events"])
    bad = events.slice(0, 5).set_column(events.column_names.index("item_id"), "item_id",
                                        pa.array(["not-in-catalogue"] * 5))
    pq.write_table(pa.concat_tables([events, bad]), paths["events"])
    raw_ids = set(events["user_id"].to_pylist())
    cfg = apply_overrides(PipelineConfig(
        output=str(root / "out"),
        source=SourceConfig(kind="events", input=paths["events"], items=paths["items"])),
        ["user_repr=pooled", "kmeans.n_clusters=2", "privacy.pseudonymize=true"])
    os.environ[KEY_ENV] = KEY
    try:
        manifest = run(cfg)
    finally:
        del os.environ[KEY_ENV]
    return cfg.output, manifest, sorted(raw_ids)


@pytest.mark.slow
def test_a_pseudonymised_run_holds_no_raw_user_id(pseudonymised_run):
    out, manifest, raw_ids = pseudonymised_run
    assert manifest["tables"]["quarantine"] == 5 and manifest["privacy"]["pseudonymized"]
    found = all_strings(out)
    leaks = [u for u in raw_ids if any(u in s for s in found)]
    assert not leaks, f"raw user ids in the artifacts: {leaks[:5]}"
    assert not any(KEY in s for s in found), "the key is in the artifacts"
    p = Pseudonymizer(KEY.encode())
    users = set(pq.read_table(os.path.join(out, "current", "profiles.parquet"))["user_id"].to_pylist())
    assert users <= {p.one(u) for u in raw_ids} and len(users) >= 190


@pytest.mark.slow
def test_forget_removes_the_user_everywhere_and_the_service_answers_404(
        pseudonymised_run, monkeypatch):
    from fastapi.testclient import TestClient

    from raypipe.run.artifacts import read_manifest
    from raypipe.cli import main
    from serve.api import LocalBackend, build_api
    out, _, raw_ids = pseudonymised_run
    monkeypatch.setenv(KEY_ENV, KEY)
    p = Pseudonymizer(KEY.encode())
    profiled = set(pq.read_table(os.path.join(out, "current", "profiles.parquet"))["user_id"].to_pylist())
    gone, kept = [u for u in raw_ids if p.one(u) in profiled][:2]
    pseudonym = p.one(gone)
    assert pseudonym in all_strings(out)
    before = read_manifest(out)

    checkpoints = f"{out}.train/encoder-0/checkpoint_000001"
    os.makedirs(checkpoints)                                   # as an encoder run leaves them
    with open(f"{checkpoints}/state.pt", "wb") as f:
        f.write(pseudonym.encode())
    assert main(["report", "--artifacts", out]) == 0
    assert main(["forget", "--user", gone, "--artifacts", out]) == 0
    assert pseudonym not in all_strings(out)
    assert not any_file_mentions(os.path.dirname(out), pseudonym, skip="data")
    assert not os.path.exists(f"{out}.train"), "the training checkpoints remain"
    segments = pq.read_table(os.path.join(out, "current", "segments.parquet"))
    assert sum(segments["size"].to_pylist()) == before["users"]["profiled"] - 1
    assert os.path.exists(os.path.join(out, "current", "report.html"))
    manifest = read_manifest(out)
    assert manifest["forgotten"][-1]["rows"]["profiles"] == 1
    assert manifest["users"]["profiled"] == before["users"]["profiled"] - 1
    assert gone not in json.dumps(manifest) and pseudonym not in json.dumps(manifest)
    assert not os.path.exists(f"{out}.stages"), "the stage store still holds the user"
    assert main(["forget", "--user", gone, "--artifacts", out]) == 2    # nothing left

    client = TestClient(build_api(LocalBackend(out), api_key=None))
    assert client.get(f"/v1/users/{gone}/profile").status_code == 404
    assert client.get(f"/v1/users/{gone}/recommendations").status_code == 404
    answer = client.get(f"/v1/users/{kept}/profile")
    assert answer.status_code == 200 and answer.json()["user_id"] == kept
    monkeypatch.setenv(KEY_ENV, "a-different-key-0123456789")
    with pytest.raises(ValueError, match="not the one"):
        LocalBackend(out)
