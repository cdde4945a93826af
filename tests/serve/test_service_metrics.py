"""serve/metrics.py without Ray: `Observed` records every answer of the app with its
endpoint, strategy and outcome, refusals before parsing included, and keeps the tags'
values to a known few. tests/serve/test_app.py scrapes the real counters from Ray."""
import pytest
from fastapi.testclient import TestClient

from serve.api import Limits, build_api
from serve.metrics import Observed, endpoint_of, outcome_of

KEY = "k"


class Backend:
    async def info(self):
        return {"version": "v1", "artifacts": "a", "user_repr": "pooled", "users": 1,
                "items": 1, "segments": 1, "strategies": ["blend"], "model": "m",
                "pseudonymized": False}

    async def profile(self, user_id):
        if user_id == "known":
            return {"error": "unavailable", "detail": "x"}      # any answer; not the point
        return {"error": "not_found", "detail": "no such user"}

    async def recommend(self, user_id, k, strategy):
        return {"error": "not_found", "detail": "no such user"}

    async def sequence(self, *args):
        return {"error": "invalid", "detail": "no usable items"}


@pytest.fixture
def client_and_records():
    records = []
    api = build_api(Backend(), KEY, Limits(max_events=5, max_body_bytes=2000))
    app = Observed(api, lambda *r: records.append(r[:3]))
    return TestClient(app), records


def test_every_answer_is_recorded_with_its_endpoint_strategy_and_outcome(client_and_records):
    client, records = client_and_records
    key = {"X-API-Key": KEY}
    one = {"item_id": "a", "timestamp": 1}
    client.get("/healthz")
    client.get("/v1/users/nobody/profile", headers=key)
    client.get("/v1/users/nobody/recommendations", params={"strategy": "segment"},
               headers=key)
    client.get("/v1/users/nobody/recommendations", headers=key)
    client.get("/v1/users/nobody/recommendations", params={"strategy": "x" * 50},
               headers=key)
    client.get("/v1/users/nobody/profile", headers={"X-API-Key": "wrong"})
    client.post("/v1/recommendations", json={"events": [one] * 6, "strategy": "vector"},
                headers=key)
    client.post("/v1/recommendations", json={"events": [one], "item_texts": {"b": "y" * 3000}},
                headers=key)
    client.post("/v1/recommendations", json={"events": [one], "strategy": "multi"},
                headers=key)
    client.get("/nowhere")
    assert records == [
        ("health", "-", 200),
        ("profile", "-", 404),
        ("recommendations", "segment", 404),
        ("recommendations", "blend", 404),
        ("recommendations", "invalid", 422),     # a made-up strategy is not a new tag value
        ("profile", "-", 401),
        ("sequence", "vector", 422),             # over max_events: refused in the handler
        ("sequence", "-", 413),                  # refused before the body is read
        ("sequence", "multi", 422),              # the backend's refusal
        ("other", "-", 404),
    ]


@pytest.mark.parametrize("endpoint, status, outcome", [
    ("profile", 200, "ok"), ("profile", 404, "unknown_user"),
    ("recommendations", 404, "unknown_user"), ("other", 404, "not_found"),
    ("sequence", 401, "unauthorized"), ("sequence", 413, "too_large"),
    ("sequence", 422, "invalid"), ("sequence", 503, "unavailable"),
    ("sequence", 500, "error"), ("version", 408, "timeout"),
])
def test_statuses_become_outcomes(endpoint, status, outcome):
    assert outcome_of(endpoint, status) == outcome


def test_paths_become_a_few_endpoints():
    assert [endpoint_of(p) for p in ("/v1/users/u1/profile", "/v1/users/u1/recommendations",
                                     "/v1/recommendations", "/v1/version", "/healthz",
                                     "/v1/users/u1/profile/x", "/docs")] == \
        ["profile", "recommendations", "sequence", "version", "health", "other", "other"]


def test_the_grafana_dashboard_asks_only_for_metrics_and_tags_that_exist():
    """Every series a panel asks for is one serve/metrics.py exports (with Ray's `ray_`
    prefix and Prometheus' suffix for its kind), grouped only by its own tags, Serve's or
    `le`; and every metric has a panel."""
    import json
    import pathlib
    import re
    from serve.metrics import METRICS, SERVE_TAGS
    path = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "raypipe.json"
    dashboard = json.loads(path.read_text())
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    series = {f"ray_{name}{s}": (name, tags) for name, (kind, tags) in METRICS.items()
              for s in suffixes[kind]}
    shown = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            names = re.findall(r"\b(ray_raypipe_\w+)", expr)
            assert names, expr
            for name in names:
                assert name in series, (panel["title"], name)
                metric, tags = series[name]
                shown.add(metric)
                allowed = {*tags, *SERVE_TAGS, "le"}
                for group in re.findall(r"by \(([^)]*)\)", expr):
                    assert {g.strip() for g in group.split(",")} <= allowed, (name, group)
                for label in re.findall(r"(\w+)=~?\"", expr):
                    assert label in allowed, (name, label)
    assert shown == set(METRICS)
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "application"}


def test_the_metrics_table_is_what_the_service_creates():
    from ray.util import metrics as ray_metrics
    from serve.metrics import METRICS, AppMetrics, embedder_metrics, swaps
    kinds = {ray_metrics.Counter: "counter", ray_metrics.Histogram: "histogram",
             ray_metrics.Gauge: "gauge"}
    created = [*vars(AppMetrics()).values(), *embedder_metrics(), swaps()]
    found = {}
    for metric in created:
        kind = next(k for cls, k in kinds.items() if isinstance(metric, cls))
        found[metric._name] = (kind, tuple(metric._tag_keys))
    assert found == METRICS
