"""The Serve app over real HTTP, deployed as users deploy it (`serve deploy` of a config),
against two small runs: the encoder run answers first, the pooled run is swapped in."""
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests
import yaml

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import response_schema_conformance
from serve.api import read_api_key

pytestmark = pytest.mark.slow
KEY = "test-key-7f3a"
MAX_EVENTS = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy(config: dict, folder) -> None:
    """`serve deploy` a config, as an operator would."""
    import ray
    path = folder / f"serve-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config))
    serve_cli = os.path.join(os.path.dirname(sys.executable), "serve")
    subprocess.run([serve_cli, "deploy", str(path), "-a",
                    f"http://{ray._private.worker.get_dashboard_url()}"],
                   check=True, capture_output=True)


def config(artifacts: str, port: int, key_file) -> dict:
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "serve", "config.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg["http_options"] = {"host": "127.0.0.1", "port": port}
    app = cfg["applications"][0]
    app["args"].update(artifacts=artifacts, max_events=MAX_EVENTS, max_body_bytes=64_000,
                       poll_s=2)
    app["runtime_env"] = {"env_vars": {"RAYPIPE_API_KEY_FILE": str(key_file)}}
    for d in app["deployments"]:
        d["autoscaling_config"]["max_replicas"] = 1     # 2 CPUs shared with the tests
        if d["name"] == "Recommender":
            d["user_config"] = {"artifacts": artifacts}
    return cfg


def wait_for_version(base: str, version: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/healthz", timeout=5).json().get("version") == version:
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(1)
    raise TimeoutError(f"service did not answer with version {version} in {timeout} s")


@pytest.fixture(scope="module")
def service(pipeline_runs, tmp_path_factory):
    from ray import serve
    from serve.service import ProfileService
    first, _, _ = pipeline_runs("encoder")
    second, _, _ = pipeline_runs("pooled")
    folder = tmp_path_factory.mktemp("serve")
    key_file = folder / "api-key"
    key_file.write_text(KEY + "\n")
    port = free_port()
    cfg = config(first, port, key_file)
    deploy(cfg, folder)
    base = f"http://127.0.0.1:{port}"
    wait_for_version(base, ProfileService(first).version)
    yield {"base": base, "first": first, "second": second, "cfg": cfg, "folder": folder}
    serve.shutdown()


def get(service, path, key=KEY, **params):
    return requests.get(service["base"] + path, params=params, timeout=30,
                        headers={"X-API-Key": key} if key else {})


def post(service, body, key=KEY, **kwargs):
    return requests.post(service["base"] + "/v1/recommendations", json=body, timeout=30,
                         headers={"X-API-Key": key} if key else {}, **kwargs)


def events_of(row):
    return [{"item_id": i, "event_type": e, "timestamp": int(t)}
            for i, e, t in zip(row.item_ids, row.event_types, row.timestamps)]


def test_every_endpoint_answers(service):
    health = requests.get(service["base"] + "/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = get(service, "/v1/version").json()
    assert info["artifacts"] == service["first"] and info["user_repr"] == "encoder"
    user = pd.read_parquet(f"{service['first']}/current/profiles.parquet").user_id[0]
    profile = get(service, f"/v1/users/{user}/profile").json()
    assert profile["user_id"] == user and profile["version"] == info["version"]
    recs = get(service, f"/v1/users/{user}/recommendations", k=5, strategy="segment").json()
    assert len(recs["items"]) == 5 and recs["strategy"] == "segment"
    body = {"events": [{"item_id": "i000001", "timestamp": 1},
                       {"item_id": "newcomer", "event_type": "cart",
                        "timestamp": "2026-11-28T10:00:00Z"}],
            "item_texts": {"newcomer": "retinol night cream"}, "k": 3}
    answer = post(service, body).json()
    assert answer["new_items"] == ["newcomer"] and len(answer["recommendations"]["items"]) == 3
    assert requests.get(service["base"] + "/openapi.json", timeout=30).status_code == 200


def test_served_recommendations_equal_the_batch_rows(service):
    out = service["first"]
    recs = pd.read_parquet(f"{out}/current/recommendations.parquet")
    for user in pd.read_parquet(f"{out}/current/profiles.parquet").user_id.sample(8, random_state=1):
        for strategy in ("vector", "segment", "blend", "multi"):
            batch = recs[(recs.user_id == user) & (recs.strategy == strategy)]
            served = get(service, f"/v1/users/{user}/recommendations", k=10,
                         strategy=strategy).json()
            assert [i["item_id"] for i in served["items"]] == \
                batch.sort_values("rank").item_id.tolist()


def test_a_posted_history_gets_the_users_profile(service):
    seqs = pd.read_parquet(f"{service['first']}/current/sequences.parquet").set_index("user_id")
    for user in pd.read_parquet(f"{service['first']}/current/profiles.parquet").user_id[:5]:
        answer = post(service, {"events": events_of(seqs.loc[user])}).json()
        known = get(service, f"/v1/users/{user}/profile").json()
        assert answer["profile"]["segment"] == known["segment"]
        assert answer["profile"]["confidence"] == pytest.approx(known["confidence"], abs=1e-4)


def scrape(tags=("endpoint", "strategy", "outcome", "reason", "version")) -> dict:
    """Ray's Prometheus endpoint -> {(sample name, (tag, value)...): value} for raypipe's
    metrics, summed over workers and replicas."""
    import ray
    from prometheus_client.parser import text_string_to_metric_families
    port = ray._private.worker.global_worker.node.metrics_export_port
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ray_raypipe_"):
                key = (sample.name, tuple((t, sample.labels[t]) for t in tags
                                          if t in sample.labels))
                out[key] = out.get(key, 0) + sample.value
    return out


def settled(timeout: float = 40) -> dict:
    """A scrape once the counts stop moving (earlier tests' requests all reported)."""
    deadline, last = time.monotonic() + timeout, scrape()
    while time.monotonic() < deadline:
        time.sleep(2.5)                      # longer than the report interval (conftest.py)
        now = scrape()
        if now == last:
            return now
        last = now
    raise TimeoutError("the metrics never settled")


def counted(before: dict, after: dict, name: str, **tags) -> float:
    key = (name, tuple(sorted(tags.items(), key=lambda kv: ["endpoint", "strategy", "outcome",
                                                            "reason", "version"].index(kv[0]))))
    return after.get(key, 0) - before.get(key, 0)


def test_the_metrics_endpoint_counts_a_known_sequence_of_requests(service):
    """Requests of every outcome, then a scrape of Ray's metrics export: each counter moved
    by exactly the requests made, and the served version's gauge is 1."""
    user = pd.read_parquet(f"{service['first']}/current/profiles.parquet").user_id[0]
    one = {"item_id": "i000001", "timestamp": 1}
    before = settled()
    for _ in range(3):
        assert get(service, f"/v1/users/{user}/profile").status_code == 200
    for _ in range(2):
        assert get(service, f"/v1/users/{user}/recommendations", strategy="segment").ok
    assert get(service, f"/v1/users/{user}/recommendations").ok
    for _ in range(2):
        assert get(service, "/v1/users/nobody/profile").status_code == 404
    assert get(service, f"/v1/users/{user}/profile", key="wrong").status_code == 401
    assert get(service, f"/v1/users/{user}/recommendations",
               strategy="magic").status_code == 422
    assert post(service, {"events": [one] * (MAX_EVENTS + 1)}).status_code == 422
    assert post(service, {"events": [one], "item_texts": {"x": "y" * 70_000}}).status_code == 413
    body = {"events": [one, {"item_id": "fresh", "timestamp": 2}],
            "item_texts": {"fresh": "vitamin c serum"}, "strategy": "vector", "k": 3}
    assert post(service, body).status_code == 200
    expected = [
        ("ray_raypipe_requests_total", dict(endpoint="profile", strategy="-", outcome="ok"), 3),
        ("ray_raypipe_requests_total",
         dict(endpoint="recommendations", strategy="segment", outcome="ok"), 2),
        ("ray_raypipe_requests_total",
         dict(endpoint="recommendations", strategy="blend", outcome="ok"), 1),
        ("ray_raypipe_requests_total",
         dict(endpoint="profile", strategy="-", outcome="unknown_user"), 2),
        ("ray_raypipe_unknown_users_total", dict(endpoint="profile"), 2),
        ("ray_raypipe_refusals_total", dict(endpoint="profile", reason="unauthorized"), 1),
        ("ray_raypipe_requests_total",
         dict(endpoint="recommendations", strategy="invalid", outcome="invalid"), 1),
        ("ray_raypipe_requests_total",
         dict(endpoint="sequence", strategy="blend", outcome="invalid"), 1),
        ("ray_raypipe_refusals_total", dict(endpoint="sequence", reason="invalid"), 1),
        ("ray_raypipe_refusals_total", dict(endpoint="sequence", reason="too_large"), 1),
        ("ray_raypipe_requests_total",
         dict(endpoint="sequence", strategy="vector", outcome="ok"), 1),
        ("ray_raypipe_request_ms_count", dict(endpoint="profile"), 6),
        ("ray_raypipe_embed_queue_ms_count", {}, 1),
        ("ray_raypipe_embed_batch_size_count", {}, 1),
    ]
    deadline = time.monotonic() + 40
    while True:
        after = scrape()
        got = [counted(before, after, name, **tags) for name, tags, _ in expected]
        if got == [n for _, _, n in expected] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert got == [n for _, _, n in expected], list(zip(expected, got))
    version = get(service, "/v1/version").json()["version"]
    served = {dict(k[1]).get("version"): v for k, v in after.items()
              if k[0] == "ray_raypipe_artifact_version"}
    assert served.get(str(version)) == 1


@pytest.mark.parametrize("path, params, status, words", [
    ("/v1/users/nobody/profile", {}, 404, "nobody"),
    ("/v1/users/nobody/recommendations", {}, 404, "nobody"),
    ("/v1/users/u0000002/recommendations", {"k": 0}, 422, "k"),
    ("/v1/users/u0000002/recommendations", {"k": 101}, 422, "k"),
    ("/v1/users/u0000002/recommendations", {"strategy": "magic"}, 422, "strategy"),
])
def test_bad_gets_are_refused_with_a_reason(service, path, params, status, words):
    r = get(service, path, **params)
    assert r.status_code == status and words in r.json()["detail"]


def test_bad_posts_are_refused_with_a_reason(service):
    one = {"item_id": "i000001", "timestamp": 1}
    cases = [
        ({"events": []}, 422, "events"),
        ({"events": [one] * (MAX_EVENTS + 1)}, 422, f"at most {MAX_EVENTS}"),
        ({"events": [{"item_id": "i000001"}]}, 422, "timestamp"),
        ({"events": [{**one, "event_type": "wishlist"}]}, 422, "event_type"),
        ({"events": [one], "k": 0}, 422, "k"),
        ({"events": [one], "strategy": "magic"}, 422, "strategy"),
        ({"events": [{"item_id": "unheard-of", "timestamp": 1}]}, 422, "usable items"),
        ({"events": [one], "colour": "red"}, 422, "colour"),
    ]
    for body, status, words in cases:
        r = post(service, body)
        assert (r.status_code, words in r.json()["detail"]) == (status, True), body
    r = requests.post(service["base"] + "/v1/recommendations", data=b"{not json",
                      headers={"X-API-Key": KEY, "Content-Type": "application/json"})
    assert r.status_code == 422
    r = post(service, {"events": [one], "item_texts": {"x": "y" * 70_000}})
    assert r.status_code == 413 and "64000 bytes" in r.json()["detail"]


def test_the_api_key_is_required(service):
    assert get(service, "/v1/version", key=None).status_code == 401
    assert get(service, "/v1/version", key="wrong").status_code == 401
    assert post(service, {"events": [{"item_id": "i000001", "timestamp": 1}]},
                key=None).status_code == 401
    assert requests.get(service["base"] + "/healthz", timeout=30).status_code == 200


def test_read_api_key_prefers_the_variable_then_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("RAYPIPE_API_KEY", raising=False)
    monkeypatch.delenv("RAYPIPE_API_KEY_FILE", raising=False)
    assert read_api_key() is None
    (tmp_path / "k").write_text("from-file\n")
    monkeypatch.setenv("RAYPIPE_API_KEY_FILE", str(tmp_path / "k"))
    assert read_api_key() == "from-file"
    monkeypatch.setenv("RAYPIPE_API_KEY", "from-env")
    assert read_api_key() == "from-env"


def test_fuzzed_requests_never_get_a_server_error(service):
    """Schemathesis generates requests from the OpenAPI spec, valid and not, for every
    operation; none may get a 5xx, and every answer must match its documented schema."""
    schema = schemathesis.openapi.from_url(service["base"] + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 5
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(base_url=service["base"], headers={"X-API-Key": KEY},
                                   checks=[schemathesis.checks.not_a_server_error,
                                           response_schema_conformance])
        check()


class Stream:
    """GET recommendations from 2 threads at ~50/s until stopped: versions seen, failures."""

    def __init__(self, service, users):
        self.seen, self.failures, self.stop = [], [], threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(service, users))
                        for _ in range(2)]

    def _run(self, service, users):
        i = 0
        with requests.Session() as s:
            while not self.stop.is_set():
                try:
                    r = s.get(f"{service['base']}/v1/users/{users[i % len(users)]}"
                              "/recommendations", headers={"X-API-Key": KEY}, timeout=30)
                    if r.status_code == 200:
                        self.seen.append(r.json()["version"])
                    else:
                        self.failures.append(r.status_code)
                except requests.RequestException as exc:
                    self.failures.append(repr(exc))
                i += 1
                time.sleep(0.02)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def with_artifacts(service, artifacts) -> dict:
    cfg = yaml.safe_load(yaml.safe_dump(service["cfg"]))
    for d in cfg["applications"][0]["deployments"]:
        if d["name"] == "Recommender":
            d["user_config"] = {"artifacts": str(artifacts)}
    return cfg


def wait_for_swap_error(service, artifacts, timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = get(service, "/v1/version").json()
        if (info.get("swap_error") or {}).get("artifacts") == str(artifacts):
            return info
        time.sleep(1)
    raise TimeoutError(f"no swap error for {artifacts} in {timeout} s")


def test_a_failed_swap_keeps_the_old_version_answering(service, tmp_path):
    """A missing folder, a half-copied run (a table short of its manifest's rows) and a run
    of another text model: each swap fails, the old version answers every request, and
    /v1/version says what failed."""
    import json
    import shutil

    from raypipe.run.versions import current_run
    from serve.service import ProfileService
    old = ProfileService(service["first"]).version
    corrupt, other_model = tmp_path / "corrupt", tmp_path / "other-model"
    for copy in (corrupt, other_model):
        shutil.copytree(service["first"], copy, symlinks=True)
    part = sorted((Path(current_run(str(corrupt))) / "profiles.parquet").rglob("*.parquet"))[0]
    pq.write_table(pq.read_table(part).slice(0, 1), part)
    manifest = Path(current_run(str(other_model))) / "manifest.json"
    m = json.loads(manifest.read_text())
    m["config"]["embed"]["model"] = "someone/else"
    manifest.write_text(json.dumps(m))
    users = pd.read_parquet(f"{service['first']}/current/profiles.parquet").user_id.tolist()
    with Stream(service, users) as stream:
        time.sleep(2)
        for bad, why in ((tmp_path / "nowhere", "FileNotFoundError"),
                         (corrupt, "IncompleteRun"), (other_model, "someone/else")):
            deploy(with_artifacts(service, bad), service["folder"])
            info = wait_for_swap_error(service, bad)
            assert why in info["swap_error"]["error"] and info["version"] == old
        time.sleep(2)
    assert stream.failures == []
    assert set(stream.seen) == {old} and len(stream.seen) > 50


def test_a_new_version_is_swapped_in_without_a_failed_request(service):
    """After the failed swaps above, a good version is taken; afterwards the service
    answers from the second run."""
    from serve.service import ProfileService
    new = ProfileService(service["second"]).version
    users = pd.read_parquet(f"{service['first']}/current/profiles.parquet").user_id.tolist()
    with Stream(service, users) as stream:
        time.sleep(2)
        deploy(with_artifacts(service, service["second"]), service["folder"])
        wait_for_version(service["base"], new)
        time.sleep(2)
    assert stream.failures == []
    assert stream.seen[0] != new and stream.seen[-1] == new and len(stream.seen) > 50
    assert get(service, "/v1/version").json()["swap_error"] is None


def test_forget_reaches_the_running_service_on_its_next_poll(service, tmp_path):
    """Runs last: the service answers from a copy of the second run; `raypipe forget` writes
    a new version of it and the service, polling LATEST every 2 s, answers 404 for the
    user while the others keep their answers."""
    import shutil

    from raypipe.cli import main
    copy = tmp_path / "served"
    shutil.copytree(service["second"], copy, symlinks=True)
    deploy(with_artifacts(service, copy), service["folder"])
    deadline = time.monotonic() + 120
    while get(service, "/v1/version").json()["artifacts"] != str(copy):
        assert time.monotonic() < deadline, "the copy was not taken"
        time.sleep(1)
    gone, kept = pd.read_parquet(f"{copy}/current/profiles.parquet").user_id[:2]
    assert get(service, f"/v1/users/{gone}/profile").status_code == 200
    assert main(["forget", "--artifacts", str(copy), "--user", gone]) == 0
    deadline = time.monotonic() + 60
    while get(service, f"/v1/users/{gone}/profile").status_code != 404:
        assert time.monotonic() < deadline, "the service still answers for a forgotten user"
        time.sleep(0.5)
    assert get(service, f"/v1/users/{kept}/profile").status_code == 200
