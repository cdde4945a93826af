"""The search space of `raypipe tune`: which encoder settings a trial draws, and how.

A space maps dotted `encoder.*` fields to one sampler each, in YAML as in Python:

    encoder.dim: {choice: [32, 64, 128]}
    encoder.lr: {loguniform: [5.0e-4, 1.0e-2]}
    encoder.dropout: {uniform: [0.1, 0.6]}
    encoder.layers: {randint: [1, 3]}        # both ends included

Only the encoder's training settings can be searched: a trial re-trains the encoder on
the sequences the run already made, so anything that would change those (or the
validation users every trial is scored on) is refused. Knows nothing about Ray
(jobs/tune.py turns a space into Tune's samplers).
"""
from __future__ import annotations

import dataclasses
import math

import yaml

from raypipe.config import EncoderConfig, PipelineConfig, apply_overrides

SAMPLERS = ("choice", "uniform", "loguniform", "randint")

# What each trial must not change: where and how training runs (not what it learns), and
# who the validation users are (the trials' common yardstick).
FIXED = {"num_workers", "use_gpu", "cpus_per_worker", "storage", "validation_share",
         "compare_pooled", "seed"}

DEFAULT_SPACE = {
    "encoder.dim": {"choice": [32, 64, 128]},
    "encoder.layers": {"choice": [1, 2, 3]},
    "encoder.heads": {"choice": [1, 2, 4]},
    "encoder.dropout": {"uniform": [0.1, 0.6]},
    "encoder.lr": {"loguniform": [5e-4, 1e-2]},
    "encoder.temperature": {"loguniform": [0.03, 0.3]},
    "encoder.max_length": {"choice": [10, 20, 30, 50]},
    "encoder.batch_size": {"choice": [32, 64, 128, 256]},
    "encoder.loss": {"choice": ["auto", "sampled"]},    # auto: full softmax to 100k items
}


def load_space(path: str | None) -> dict:
    """A YAML file of samplers (see the module doc) -> a checked space; None: the default."""
    if path is None:
        return check(DEFAULT_SPACE)
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a search space is a mapping of encoder.FIELD: "
                         "{SAMPLER: ARGS}")
    return check(data)


def check(space: dict) -> dict:
    """-> the space as given, or ValueError naming the first entry that is not usable."""
    fields = {f.name: f for f in dataclasses.fields(EncoderConfig)}
    if not space:
        raise ValueError("the search space is empty")
    for key, spec in space.items():
        section, _, name = key.partition(".")
        if section != "encoder" or name not in fields:
            raise ValueError(f"search space: {key!r} is not an encoder.* field (one of "
                             f"{sorted(set(fields) - FIXED)})")
        if name in FIXED:
            raise ValueError(f"search space: {key} cannot vary between trials (it changes "
                             "where training runs or which users it is scored on)")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
            raise ValueError(f"search space: {key}: expected one of "
                             f"{{{', '.join(SAMPLERS)}: ...}}, got {spec!r}")
        kind, args = next(iter(spec.items()))
        if kind == "choice":
            if not isinstance(args, list) or not args:
                raise ValueError(f"search space: {key}: choice takes a non-empty list")
        elif not (isinstance(args, list) and len(args) == 2 and args[0] < args[1]):
            raise ValueError(f"search space: {key}: {kind} takes [low, high] with low < high")
        elif kind == "loguniform" and args[0] <= 0:
            raise ValueError(f"search space: {key}: loguniform needs low > 0")
    return dict(space)


def bounded(space: dict, cfg: PipelineConfig) -> dict:
    """The space within what `cfg`'s sequences allow: encoder.max_length choices above
    sequences.max_length would all read the same events, so they are left out."""
    spec = space.get("encoder.max_length")
    if not spec or "choice" not in spec:
        return space
    top = cfg.sequences.max_length
    kept = sorted({min(int(v), top) for v in spec["choice"]})
    return {**space, "encoder.max_length": {"choice": kept}}


def point(cfg: PipelineConfig, space: dict) -> dict:
    """`cfg`'s own values of the space's fields: the first trial, so the search never
    reports worse than the settings it started from."""
    from raypipe.vectors.users import encoder_width
    start = {key: getattr(cfg.encoder, key.partition(".")[2]) for key in space}
    if start.get("encoder.max_length") == 0:       # 0 reads all the sequence: say how much
        start["encoder.max_length"] = encoder_width(cfg)
    return start


def apply(cfg: PipelineConfig, params: dict) -> PipelineConfig:
    """A trial's parameters -> the run's config with them set."""
    return apply_overrides(cfg, [f"{k}={_text(plain(v))}" for k, v in sorted(params.items())])


def plain(value):
    """A sampled value as a Python value (numpy scalars as Python numbers)."""
    return value.item() if hasattr(value, "item") else value


def _text(value) -> str:
    """A value as --set would write it."""
    return repr(value) if isinstance(value, float) and math.isfinite(value) else str(value)
