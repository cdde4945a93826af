"""Item groups: clusters of the catalogue's item vectors, named by their distinctive terms
(class-based TF-IDF, as segments are). Knows nothing about Ray."""
from __future__ import annotations

import numpy as np

from raypipe.segments.profiles import distinctive_terms


def group_names(labels: np.ndarray, n_groups: int, texts: list[str], top_terms: int) -> list[str]:
    """(n_items,) group labels and the items' texts -> each group's name: its three most
    distinctive terms, or `group <c>` when it has none."""
    members = {c: {int(r): 1.0 for r in np.flatnonzero(labels == c)} for c in range(n_groups)}
    terms = distinctive_terms(members, texts, top_terms)
    return [" / ".join(terms.get(c, [])[:3]) or f"group {c}" for c in range(n_groups)]
