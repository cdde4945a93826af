"""Write rayservice.yaml's serveConfigV2 from serve/config.yaml, the file `serve deploy` uses,
with the few values that differ on Kubernetes (KUBERNETES below).

    python deploy/kuberay/render.py                       # rewrite the block in place
    python deploy/kuberay/render.py --artifacts s3://b/raypipe/run-1
    python deploy/kuberay/render.py --check               # exit 1 if the file is stale

The rest of rayservice.yaml (the Ray cluster) is left as written.
"""
from __future__ import annotations

import argparse
import copy
import pathlib
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
SERVE_CONFIG = HERE.parent.parent / "serve" / "config.yaml"
RAYSERVICE = HERE / "rayservice.yaml"
BLOCK = "  serveConfigV2: |\n"
INDENT = "    "

# What Kubernetes changes: the run comes from object storage (the RayJob's --output), the
# API key from the Secret mounted in every pod, and the TextEmbedder asks for a GPU even
# while the autoscaling cluster has no GPU pod yet (the default looks for GPUs at deploy).
ARTIFACTS = "s3://YOUR-BUCKET/raypipe/run-1"
KEY_FILE = "/run/secrets/raypipe/api-key"
KUBERNETES = {"embedder_gpus": 1.0}


def serve_config(base: dict, artifacts: str = ARTIFACTS) -> dict:
    """serve/config.yaml's config (as a dict) -> the one embedded in the RayService."""
    cfg = copy.deepcopy(base)
    (app,) = cfg["applications"]
    app["args"].update(artifacts=artifacts, **KUBERNETES)
    app["runtime_env"] = {"env_vars": {"RAYPIPE_API_KEY_FILE": KEY_FILE}}
    for deployment in app["deployments"]:
        if "user_config" in deployment:
            deployment["user_config"] = {**deployment["user_config"], "artifacts": artifacts}
    return cfg


def embedded(text: str) -> str:
    """The serveConfigV2 block's YAML (unindented) in rayservice.yaml's text."""
    start = text.index(BLOCK) + len(BLOCK)
    lines = []
    for line in text[start:].splitlines(keepends=True):
        if line.strip() and not line.startswith(INDENT):
            break
        lines.append(line[len(INDENT):] if line.strip() else "\n")
    return "".join(lines)


def render(text: str, cfg: dict) -> str:
    """rayservice.yaml's text with its serveConfigV2 block replaced by cfg."""
    old = embedded(text)
    start = text.index(BLOCK) + len(BLOCK)
    length = sum(len(INDENT) + len(line) if line.strip() else len(line)
                 for line in old.splitlines(keepends=True))
    new = "".join(INDENT + line for line in
                  yaml.safe_dump(cfg, sort_keys=False, width=96).splitlines(keepends=True))
    return text[:start] + new + text[start + length:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifacts", help=f"the run the service answers (default: the file's, "
                                       f"else {ARTIFACTS})")
    p.add_argument("--check", action="store_true", help="only check that the file is current")
    args = p.parse_args(argv)
    text = RAYSERVICE.read_text()
    artifacts = args.artifacts or _current_artifacts(text)
    out = render(text, serve_config(yaml.safe_load(SERVE_CONFIG.read_text()), artifacts))
    if args.check:
        if out != text:
            print(f"{RAYSERVICE} is stale: run python {__file__}", file=sys.stderr)
            return 1
        return 0
    RAYSERVICE.write_text(out)
    print(f"wrote {RAYSERVICE}")
    return 0


def _current_artifacts(text: str) -> str:
    try:
        return yaml.safe_load(embedded(text))["applications"][0]["args"]["artifacts"]
    except (TypeError, KeyError, IndexError, yaml.YAMLError):
        return ARTIFACTS


if __name__ == "__main__":
    sys.exit(main())
