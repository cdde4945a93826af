"""serve/settings.py: serve/config.yaml is the only home of the service's limits and
autoscaling; the builder's options come from it and the code's defaults agree with it."""
import dataclasses

from serve import settings


def test_code_defaults_agree_with_the_config():
    from serve.api import Limits
    from serve.app import ServeArgs
    args = settings.default_args()
    defaults = ServeArgs(artifacts="x").model_dump()
    for name, value in args.items():
        if name != "artifacts":
            assert defaults[name] == value, name
    limits = dataclasses.asdict(Limits())
    for name in ("max_events", "max_body_bytes", "max_item_texts"):
        assert limits[name] == args[name], name


def test_the_builder_applies_the_config_deployment_options():
    from serve.app import Recommender, TextEmbedder
    for deployment in (Recommender, TextEmbedder):
        options = settings.deployment_options(deployment.name)
        assert options["autoscaling_config"]["max_replicas"] >= 1
        applied = deployment.options(**options)
        assert applied.max_ongoing_requests == options["max_ongoing_requests"]
        assert applied.max_queued_requests == options["max_queued_requests"] > 0
        auto = applied._deployment_config.autoscaling_config
        assert auto.max_replicas == options["autoscaling_config"]["max_replicas"]
        assert auto.target_ongoing_requests == options["autoscaling_config"][
            "target_ongoing_requests"]
