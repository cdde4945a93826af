"""Reading a finished run's artifacts for the service: files by name, a run's version, and
(item_id, vector) tables in catalogue order."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa

from raypipe.arrays import to_numpy
from raypipe.run import paths as rio


def artifact_version(manifest_bytes: bytes) -> str:
    """A run's version: the first 12 hex digits of its manifest's SHA-256."""
    return hashlib.sha256(manifest_bytes).hexdigest()[:12]


def read_bytes(uri: str, name: str) -> bytes:
    fs, path = rio.resolve(uri)
    with fs.open_input_stream(f"{path}/{name}") as f:
        return f.read()


def vectors_in_order(table: pa.Table, item_index: pd.Index) -> np.ndarray:
    """(item_id, vector) table -> (n_items, d) in catalogue order."""
    order = pd.Index(table["item_id"].to_numpy(zero_copy_only=False)).get_indexer(item_index)
    if (order < 0).any():
        raise ValueError(f"{(order < 0).sum()} catalogue items have no vector")
    return to_numpy(table["vector"].take(order))
