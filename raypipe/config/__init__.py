"""Pipeline configuration: one frozen dataclass per stage, composed into `PipelineConfig`.

Each stage receives only its own section (`embed_items(ds, cfg.embed)`). Files are YAML with
the same nesting as the dataclasses; `--set kmeans.n_clusters=8` overrides one dotted field.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

import yaml

from raypipe.config.sections import (  # noqa: F401 (the sections are raypipe.config's)
    SOURCES,
    USER_REPRS,
    STRATEGIES,
    DEFAULT_STRATEGIES,
    INDEXES,
    SyntheticConfig,
    SourceConfig,
    CleanConfig,
    SequenceConfig,
    EmbedConfig,
    UserConfig,
    EncoderConfig,
    ItemGroupConfig,
    ProfileConfig,
    RecommendConfig,
)
from raypipe.config.runs import PrivacyConfig, EvalConfig, TrackingConfig, TRACKERS  # noqa: F401
from raypipe.config.segments import KMeansConfig  # noqa: F401

__all__ = ["SOURCES", "USER_REPRS", "STRATEGIES", "DEFAULT_STRATEGIES", "INDEXES", "SyntheticConfig", "SourceConfig", "CleanConfig", "SequenceConfig", "EmbedConfig", "UserConfig", "EncoderConfig", "KMeansConfig", "ItemGroupConfig", "ProfileConfig", "RecommendConfig", "PrivacyConfig", "EvalConfig",
           "TrackingConfig", "TRACKERS", "PipelineConfig", "from_dict", "non_defaults", "apply_override", "apply_overrides", "load_config"]

@dataclass(frozen=True)
class PipelineConfig:
    output: str = "artifacts"
    user_repr: str = "encoder"  # one of USER_REPRS
    address: str | None = None  # Ray cluster address; None starts a local Ray
    num_cpus: int | None = None  # CPUs for a local Ray; None = all
    synthetic_dir: str = "data"  # where `source.kind=synthetic` logs are generated (and reused)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    sequences: SequenceConfig = field(default_factory=SequenceConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    user: UserConfig = field(default_factory=UserConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    profiles: ProfileConfig = field(default_factory=ProfileConfig)
    item_groups: ItemGroupConfig = field(default_factory=ItemGroupConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self):
        if self.user_repr not in USER_REPRS:
            raise ValueError(f"user_repr={self.user_repr!r} should be one of {USER_REPRS}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable hash of everything that shapes the outputs (not where they go)."""
        d = self.to_dict()
        for key in ("output", "address", "num_cpus", "synthetic_dir", "tracking"):
            d.pop(key)
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def from_dict(cls, data: dict):
    """Build dataclass `cls` from a nested dict, naming unknown keys."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"unknown config keys for {cls.__name__}: {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        default = known[name].default_factory() if known[name].default_factory \
            is not dataclasses.MISSING else known[name].default
        if is_dataclass(default) and isinstance(value, dict):
            value = from_dict(type(default), value)
        kwargs[name] = _coerce(known[name], value)
    return cls(**kwargs)


def _coerce(field: dataclasses.Field, value: Any) -> Any:
    """YAML 1.1 reads 1e-6 (no dot) as a string: a float field takes it as the number."""
    if isinstance(value, str) and "float" in str(field.type):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def apply_override(cfg, dotted: str, value: Any):
    """Return `cfg` with the field at `dotted` (e.g. 'kmeans.n_clusters') set to `value`."""
    return _apply(cfg, _nest({}, dotted, value))


def _nest(changes: dict, dotted: str, value: Any) -> dict:
    """'a.b.c', v -> changes with changes[a][b][c] = v (later settings of a key win)."""
    head, _, rest = dotted.partition(".")
    if not rest:
        changes[head] = value
    else:
        inner = changes.get(head)
        changes[head] = _nest(inner if isinstance(inner, _Section) else _Section(), rest,
                              value)
    return changes


class _Section(dict):
    """Nested settings of one section (a plain dict value is a value, not a section)."""


def _apply(cfg, changes: dict):
    """Every change of one dataclass at once: checks across its fields (eval.cold_share
    needs eval.holdout=last) see all of them, whatever their order on the command line."""
    names = {f.name for f in fields(cfg)}
    updates = {}
    for head, value in changes.items():
        if head not in names:
            raise ValueError(f"unknown config key {head!r}: {type(cfg).__name__} has "
                             f"{sorted(names)}")
        if isinstance(value, _Section):
            inner = getattr(cfg, head)
            if isinstance(inner, dict):
                updates[head] = {**inner, **_plain(value)}
            elif not is_dataclass(inner):
                raise ValueError(f"config key {head!r} is a value, not a section")
            else:
                updates[head] = _apply(inner, value)
        else:
            updates[head] = _coerce(next(f for f in fields(cfg) if f.name == head), value)
    return replace(cfg, **updates)


def _plain(section: dict) -> dict:
    return {k: _plain(v) if isinstance(v, _Section) else v for k, v in section.items()}


def non_defaults(cfg: PipelineConfig) -> dict:
    """The fields of `cfg` that differ from the defaults, nested as a config file holds
    them: `load_config` of its YAML gives `cfg` back."""
    def diff(a: dict, b: dict) -> dict:
        out = {}
        for k, v in a.items():
            if isinstance(v, dict) and isinstance(b.get(k), dict) and k != "event_weights":
                sub = diff(v, b[k])
                if sub:
                    out[k] = sub
            elif v != b.get(k):
                out[k] = list(v) if isinstance(v, tuple) else v
        return out
    return diff(cfg.to_dict(), PipelineConfig().to_dict())


def load_config(path: str | None = None, overrides: list[str] = ()) -> PipelineConfig:
    """Defaults, then the YAML file, then each `key=value` override (value parsed as YAML)."""
    data = {}
    if path:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    return apply_overrides(from_dict(PipelineConfig, data), overrides)


def apply_overrides(cfg, overrides: list[str]):
    """Apply `key=value` strings in order; values are parsed as YAML (8, true, [a, b])."""
    changes: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r} should look like key=value")
        _nest(changes, key.strip(), yaml.safe_load(raw))
    return _apply(cfg, changes)
