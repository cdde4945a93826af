"""The service's own Prometheus metrics, exported through Ray's metrics agent beside Serve's
(each node's `--metrics-export-port`; Ray prefixes the names with `ray_`):

| metric | kind | tags |
|---|---|---|
| raypipe_requests | counter | endpoint, strategy, outcome |
| raypipe_request_ms | histogram | endpoint |
| raypipe_unknown_users | counter | endpoint |
| raypipe_refusals | counter | endpoint, reason |
| raypipe_embed_queue_ms | histogram | (TextEmbedder) |
| raypipe_embed_batch_size | histogram | (TextEmbedder) |
| raypipe_artifact_version | gauge | version, run (1: being served, 0: swapped out) |
| raypipe_version_swaps | counter | result |

Serve adds deployment, replica and application tags. `Observed` is the ASGI wrapper that
counts every answer the Recommender's app gives, refusals before parsing included;
deploy/grafana/raypipe.json is a Grafana dashboard over them (import it, pick the Prometheus
that scrapes Ray's nodes).
"""
from __future__ import annotations

import functools
import os
import re
import time
from urllib.parse import parse_qs

from raypipe.config import STRATEGIES

ENDPOINTS = ((re.compile(r"^/v1/users/[^/]+/profile$"), "profile"),
             (re.compile(r"^/v1/users/[^/]+/recommendations$"), "recommendations"),
             (re.compile(r"^/v1/recommendations$"), "sequence"),
             (re.compile(r"^/v1/version$"), "version"),
             (re.compile(r"^/healthz$"), "health"))
USER_ENDPOINTS = {"profile", "recommendations"}
REFUSALS = {401: "unauthorized", 408: "timeout", 413: "too_large", 422: "invalid",
            429: "overloaded", 503: "unavailable"}
# name -> (kind, tags): the table above (tests/serve/test_service_metrics.py checks the dashboard)
METRICS = {
    "raypipe_requests": ("counter", ("endpoint", "strategy", "outcome")),
    "raypipe_request_ms": ("histogram", ("endpoint",)),
    "raypipe_unknown_users": ("counter", ("endpoint",)),
    "raypipe_refusals": ("counter", ("endpoint", "reason")),
    "raypipe_embed_queue_ms": ("histogram", ()),
    "raypipe_embed_batch_size": ("histogram", ()),
    "raypipe_artifact_version": ("gauge", ("version", "run")),
    "raypipe_version_swaps": ("counter", ("result",)),
}
SERVE_TAGS = ("deployment", "replica", "application")
MS_BOUNDARIES = [0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000]
NO_STRATEGY = "-"


def endpoint_of(path: str) -> str:
    for pattern, name in ENDPOINTS:
        if pattern.match(path):
            return name
    return "other"


def outcome_of(endpoint: str, status: int) -> str:
    """An HTTP status -> the outcome tag: ok, unknown_user, a refusal's reason, or error."""
    if status < 400:
        return "ok"
    if status == 404:
        return "unknown_user" if endpoint in USER_ENDPOINTS else "not_found"
    return REFUSALS.get(status, "error")


def strategy_of(endpoint: str, scope: dict) -> str:
    """GET recommendations: the query's strategy (the API's default, blend, when absent);
    POST: the strategy the handler read from the body (scope state); else none."""
    if endpoint == "recommendations":
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        strategy = query.get("strategy", ["blend"])[-1]
    elif endpoint == "sequence":
        strategy = (scope.get("state") or {}).get("strategy", NO_STRATEGY)
    else:
        return NO_STRATEGY
    # A tag's values must stay few: a made-up strategy (refused anyway) is "invalid".
    return strategy if strategy in STRATEGIES or strategy == NO_STRATEGY else "invalid"


class Observed:
    """ASGI middleware: times each HTTP request and records its endpoint, strategy and
    outcome with `record(endpoint, strategy, status, seconds)`."""

    def __init__(self, app, record):
        self.app, self.record = app, record

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope.setdefault("state", {})
        start, status = time.perf_counter(), [500]

        async def watched(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, watched)
        finally:
            endpoint = endpoint_of(scope.get("path", ""))
            self.record(endpoint, strategy_of(endpoint, scope), status[0],
                        time.perf_counter() - start)


class AppMetrics:
    """The Recommender's metrics; created in the replica (Ray's metrics need its worker)."""

    def __init__(self):
        from ray.serve.metrics import Counter, Gauge, Histogram
        self.requests = Counter("raypipe_requests", description="requests answered, by "
                                "endpoint, strategy and outcome",
                                tag_keys=("endpoint", "strategy", "outcome"))
        self.latency = Histogram("raypipe_request_ms", description="time in the replica's "
                                 "app per request, ms", boundaries=MS_BOUNDARIES,
                                 tag_keys=("endpoint",))
        self.unknown = Counter("raypipe_unknown_users", description="requests for users "
                               "the served run does not know", tag_keys=("endpoint",))
        self.refusals = Counter("raypipe_refusals", description="requests refused, by "
                                "reason", tag_keys=("endpoint", "reason"))
        self.version = Gauge("raypipe_artifact_version", description="1 for the artifact "
                             "version being served, 0 once swapped out",
                             tag_keys=("version", "run"))

    def record(self, endpoint: str, strategy: str, status: int, seconds: float) -> None:
        outcome = outcome_of(endpoint, status)
        self.requests.inc(tags={"endpoint": endpoint, "strategy": strategy,
                                "outcome": outcome})
        self.latency.observe(seconds * 1e3, tags={"endpoint": endpoint})
        if outcome == "unknown_user":
            self.unknown.inc(tags={"endpoint": endpoint})
        elif status in REFUSALS:
            self.refusals.inc(tags={"endpoint": endpoint, "reason": outcome})

    def served(self, new, old) -> None:
        """A swap: `new` (a ProfileService) answers now, `old` (or None) no longer."""
        self._versions = [(1, new)] + ([(0, old)] if old is not None else [])
        self.refresh()

    def refresh(self) -> None:
        """Set the version gauge again: Ray exports a gauge's value once, then drops it, so
        the replica calls this every `refresh_s()` (app.py)."""
        for value, service in getattr(self, "_versions", ()):
            self.version.set(value, tags={"version": str(service.version),
                                          "run": str(service.run)})


def refresh_s() -> float:
    """Half of Ray's metrics report interval (RAY_metrics_report_interval_ms, 10 s by
    default), so that a gauge set this often is in every report."""
    return float(os.environ.get("RAY_metrics_report_interval_ms", 10_000)) / 2000


@functools.lru_cache(maxsize=1)
def embedder_metrics():
    """The TextEmbedder's: time a text waits for its batch, and the batches' sizes."""
    from ray.serve.metrics import Histogram
    return (Histogram("raypipe_embed_queue_ms", description="time a text waited for its "
                      "embedding batch, ms", boundaries=MS_BOUNDARIES),
            Histogram("raypipe_embed_batch_size", description="texts per embedding batch",
                      boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256]))


@functools.lru_cache(maxsize=1)
def swaps():
    """Version swaps by result (ok, failed)."""
    from ray.serve.metrics import Counter
    return Counter("raypipe_version_swaps", description="artifact versions the service "
                   "tried to swap in, by result", tag_keys=("result",))
