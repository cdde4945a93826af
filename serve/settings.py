"""serve/config.yaml is the one home of the service's limits and autoscaling: `serve deploy`
reads it as it is, and `raypipe serve` / `serve run serve.app:app_builder` take the same
deployment options and builder arguments from it here. tests/test_settings.py checks that
the code's defaults (serve.app.ServeArgs, serve.api.Limits) agree with it."""
from __future__ import annotations

import functools
import os

import yaml

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.yaml")
DEPLOYMENT_OPTIONS = ("max_ongoing_requests", "ray_actor_options", "autoscaling_config",
                      "max_queued_requests", "graceful_shutdown_timeout_s")


@functools.lru_cache(maxsize=1)
def application() -> dict:
    """serve/config.yaml's raypipe application."""
    with open(CONFIG) as f:
        config = yaml.safe_load(f)
    return next(a for a in config["applications"] if a["name"] == "raypipe")


def default_args() -> dict:
    """The builder arguments (`args`) of serve/config.yaml."""
    return dict(application()["args"])


def deployment_options(name: str) -> dict:
    """A deployment's options in serve/config.yaml, as `Deployment.options(**...)` takes
    them (its `user_config` excepted: that names one run, given when building)."""
    for d in application()["deployments"]:
        if d["name"] == name:
            return {k: v for k, v in d.items() if k in DEPLOYMENT_OPTIONS}
    raise KeyError(f"serve/config.yaml has no deployment {name!r}")
