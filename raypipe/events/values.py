"""Columns as read -> canonical typed columns, with a mask of the values that would not convert.

Any Arrow type a file may hold (strings, binary that is not UTF-8, integers, floats from
pandas, timestamps of any unit, nested values) becomes a string or float64 column; a value
that cannot become one is null in the result and true in the mask, so the row is quarantined
with a reason instead of the read failing.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def _plain(col) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _no(n: int) -> np.ndarray:
    return np.zeros(n, bool)


def strings(col) -> tuple[pa.Array, np.ndarray]:
    """-> (string column, mask of values that are not valid UTF-8 or not representable)."""
    col = _plain(col)
    n, t = len(col), col.type
    if pa.types.is_null(t):
        return pa.nulls(n, pa.string()), _no(n)
    if pa.types.is_floating(t):
        # Float ids (pandas turns int ids with nulls into floats): 17850.0 -> "17850".
        arr = col.to_numpy(zero_copy_only=False).astype("float64")
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(arr) & (np.abs(arr) < 2.0 ** 62) & (np.floor(arr) == arr)
        ints = pc.cast(pa.array(np.where(whole, arr, 0).astype("int64")), pa.string())
        return pc.if_else(pa.array(whole), ints, pc.cast(col, pa.string())), _no(n)
    if pa.types.is_timestamp(t):
        seconds = pc.cast(pc.cast(col, pa.timestamp("s", t.tz), safe=False), pa.int64())
        return pc.cast(seconds, pa.string()), _no(n)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            col.validate(full=True)
            return pc.cast(col, pa.string()), _no(n)
        except pa.ArrowInvalid:
            return _decoded(pc.cast(col.view(pa.binary() if pa.types.is_string(t)
                                             else pa.large_binary()), pa.large_binary()))
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return _decoded(col)
    try:
        return pc.cast(col, pa.string(), safe=False), _no(n)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = [None if v is None else json.dumps(v, default=str, ensure_ascii=False)
                  for v in col.to_pylist()]
        return pa.array(values, pa.string()), _no(n)


def _decoded(col: pa.Array) -> tuple[pa.Array, np.ndarray]:
    out, bad = [], []
    for v in col.to_pylist():
        try:
            out.append(None if v is None else bytes(v).decode("utf-8"))
            bad.append(False)
        except UnicodeDecodeError:
            out.append(None)
            bad.append(True)
    return pa.array(out, pa.string()), np.array(bad, bool)


def numbers(col) -> tuple[pa.Array, np.ndarray]:
    """-> (float64 column, mask of values that are present but not finite numbers, e.g.
    "$3.50" or inf). NaN is a missing value (pandas writes missing numbers so)."""
    col = _plain(col)
    n, t = len(col), col.type
    if pa.types.is_null(t):
        return pa.nulls(n, pa.float64()), _no(n)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) \
            or pa.types.is_decimal(t):
        arr = pc.cast(col, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        present = col.is_valid().to_numpy(zero_copy_only=False) & ~np.isnan(arr)
        bad = present & np.isinf(arr)
    else:
        text, bad = strings(col)
        try:                                   # every value a number: Arrow parses them all
            arr = pc.cast(pc.utf8_trim_whitespace(text), pa.float64()).to_numpy(
                zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            arr = None
        if arr is not None:
            present = text.is_valid().to_numpy(zero_copy_only=False) & ~np.isnan(arr)
            bad = bad | (present & np.isinf(arr))
            keep = present & ~bad
            return pa.array(np.where(keep, arr, 0.0), mask=~keep), bad
        s = pd.Series(text.to_pandas(), dtype=object).str.strip()
        arr = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        present = text.is_valid().to_numpy(zero_copy_only=False) & \
            ~s.str.lower().isin(["nan", ""]).to_numpy(dtype=bool)
        bad = bad | (present & ~np.isfinite(arr))
    keep = present & ~bad
    return pa.array(np.where(keep, arr, 0.0), mask=~keep), bad


def too_long(col: pa.Array, limit: int) -> np.ndarray:
    """Mask of string values longer than `limit` characters."""
    return pc.fill_null(pc.greater(pc.utf8_length(col), limit), False) \
        .to_numpy(zero_copy_only=False)
