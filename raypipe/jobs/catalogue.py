"""The catalogue every user-level map reads, in a module of its own: a worker that unpickles
it imports this and numpy/pandas, not the users stage's torch and scikit-learn (seconds per
fresh worker on small machines)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from raypipe.jobs.runtime import cached


class Catalogue:
    """What every user-level stage needs of the items, shipped once through the object store."""

    def __init__(self, item_ids: list[str], texts: list[str], vectors: np.ndarray):
        self.item_ids, self.texts, self.vectors = item_ids, texts, vectors

    def index(self) -> pd.Index:
        return cached(f"index-{id(self)}", lambda: pd.Index(self.item_ids))
