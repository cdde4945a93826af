"""The run-level sections: privacy of user ids, the evaluation protocol (leave-one-out,
cold items) and experiment tracking."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrivacyConfig:
    # Replace user ids by HMAC-SHA256(key, id) as they are read; the key comes from
    # RAYPIPE_PSEUDONYM_KEY or the file named by RAYPIPE_PSEUDONYM_KEY_FILE (privacy.py).
    pseudonymize: bool = False


@dataclass(frozen=True)
class EvalConfig:
    holdout: str = "none"      # "last": hold out each user's last item (second last validates)
    ks: tuple = (10, 20)
    # Cold items: this share of the catalogue (a seeded hash of the item id) loses every
    # event before the test: histories, training and counts never see them; a user's
    # held-out item stays, and users whose item is cold are also scored apart ("cold").
    cold_share: float = 0.0
    cold_seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "ks", tuple(self.ks))
        if self.holdout not in ("none", "last"):
            raise ValueError(f"eval.holdout={self.holdout!r} should be 'none' or 'last'")
        if not 0.0 <= self.cold_share < 1.0:
            raise ValueError(f"eval.cold_share={self.cold_share} should be in [0, 1)")
        if self.cold_share and self.holdout != "last":
            raise ValueError("eval.cold_share needs eval.holdout=last: cold items are scored "
                             "as held-out items")


TRACKERS = ("mlflow", "tensorboard")


@dataclass(frozen=True)
class TrackingConfig:
    """Experiment tracking, off by default: `to: [mlflow]`, `[tensorboard]` or both. The
    encoder's epochs are logged as they finish; the K-means, sweep and blend fits, the test
    metrics, stage times and the config when the run ends (raypipe/run/tracking.py)."""
    to: tuple = ()
    uri: str = ""              # MLflow tracking URI; "": a file store at <output>.mlruns
    dir: str = ""              # TensorBoard log folder; "": <output>.tensorboard
    experiment: str = "raypipe"

    def __post_init__(self):
        to = (self.to,) if isinstance(self.to, str) else tuple(self.to)
        object.__setattr__(self, "to", tuple(t for t in to if t and t != "none"))
        unknown = set(self.to) - set(TRACKERS)
        if unknown:
            raise ValueError(f"tracking.to: {sorted(unknown)} not among {TRACKERS}")
