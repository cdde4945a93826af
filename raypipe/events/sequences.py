"""Clean events -> one time-ordered behaviour sequence per user. Knows nothing about Ray.

`build_sequences` needs every event of a user in the same table (the Ray stage partitions by
user). `sequence_text` renders a sequence as text; the batch job and serving both use it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from raypipe.arrays import seeded_rank
from raypipe.config import SequenceConfig
from raypipe.schema import EVENT_TYPES, FILE, ROW

SEQUENCES = pa.schema([
    ("user_id", pa.string()),
    ("item_ids", pa.list_(pa.string())),      # oldest first, last max_length events
    ("event_types", pa.list_(pa.string())),
    ("timestamps", pa.list_(pa.int64())),
    ("n_events", pa.int64()),                 # all kept events of the user, before truncation
    *[(f"n_{t}", pa.int64()) for t in EVENT_TYPES],
    ("too_short", pa.bool_()),                # fewer than min_length items: set aside
])


def _lists(values: pa.Array, offsets: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def _type_counts(users: np.ndarray, types: np.ndarray) -> np.ndarray:
    """Events sorted by user -> (n_users, len(EVENT_TYPES)) counts, users in sorted order."""
    new_user = np.r_[True, users[1:] != users[:-1]] if len(users) else np.zeros(0, bool)
    user = np.cumsum(new_user) - 1
    kind = pd.Categorical(types, categories=EVENT_TYPES).codes.astype(np.int64)
    n, t = int(new_user.sum()), len(EVENT_TYPES)
    ok = kind >= 0
    return np.bincount(user[ok] * t + kind[ok], minlength=n * t).reshape(n, t)


def build_sequences(events: pa.Table, cfg: SequenceConfig) -> pa.Table:
    """Events of whole users -> one sequence per user; `too_short` flags users with fewer
    than `min_length` items, which later stages set aside (and the manifest counts).

    Order is (timestamp, file, row), so events sharing a timestamp keep their log order."""
    if events.num_rows == 0:
        return SEQUENCES.empty_table()
    sort_keys = [("user_id", "ascending"), ("timestamp", "ascending")]
    sort_keys += [(c, "ascending") for c in (FILE, ROW) if c in events.column_names]
    t = events.sort_by(sort_keys)
    df = pd.DataFrame({"user": t["user_id"].to_pandas(), "item": t["item_id"].to_pandas(),
                       "type": t["event_type"].to_pandas()})
    counts = _type_counts(df["user"].to_numpy(), df["type"].to_numpy())
    if cfg.dedup_items:
        t = t.filter(pa.array(~df.duplicated(["user", "item"]).to_numpy()))
        df = df[~df.duplicated(["user", "item"])].reset_index(drop=True)
    users = df["user"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    lengths = np.diff(np.r_[starts, len(users)])
    from_end = np.repeat(starts + lengths, lengths) - np.arange(len(users)) - 1
    t = t.filter(pa.array(from_end < cfg.max_length))
    offsets = np.r_[0, np.cumsum(np.minimum(lengths, cfg.max_length))]
    user_ids = users[starts]
    out = pa.table({
        "user_id": pa.array(user_ids, pa.string()),
        "item_ids": _lists(t["item_id"].combine_chunks(), offsets),
        "event_types": _lists(t["event_type"].combine_chunks(), offsets),
        "timestamps": _lists(t["timestamp"].combine_chunks(), offsets),
        "n_events": pa.array(counts.sum(1), pa.int64()),
        **{f"n_{e}": pa.array(counts[:, j], pa.int64()) for j, e in enumerate(EVENT_TYPES)},
        "too_short": pa.array(lengths < cfg.min_length),
    }, schema=SEQUENCES)
    return out


def holdout_last(seqs: pa.Table) -> pa.Table:
    """Leave-one-out: `target_item` = last item, `valid_item` = the one before; the lists keep
    the history without the target. Users with one item have no target (null)."""
    items = seqs["item_ids"].to_pylist()
    has_target = [len(s) >= 2 for s in items]
    target = [s[-1] if ok else None for s, ok in zip(items, has_target)]
    valid = [s[-2] if len(s) >= 3 else None for s in items]
    out = seqs
    for name in ("item_ids", "event_types", "timestamps"):
        lists = out[name].to_pylist()
        trimmed = [v[:-1] if ok else v for v, ok in zip(lists, has_target)]
        out = out.set_column(out.schema.get_field_index(name), name,
                             pa.array(trimmed, SEQUENCES.field(name).type))
    return out.append_column("target_item", pa.array(target, pa.string())) \
              .append_column("valid_item", pa.array(valid, pa.string()))


def cold_mask(item_ids, share: float, seed: int) -> np.ndarray:
    """The items held out as cold (eval.cold_share): a seeded hash of the item id below
    `share`. The salt keeps it apart from the hash that picks validation users."""
    if share <= 0:
        return np.zeros(len(item_ids), bool)
    return seeded_rank(item_ids, f"cold:{seed}") < share


def cold_items(item_ids: list, share: float, seed: int) -> frozenset:
    """The ids of the items `cold_mask` holds out."""
    return frozenset(np.asarray(item_ids, object)[cold_mask(item_ids, share, seed)])


def drop_items(seqs: pa.Table, drop: frozenset, min_length: int) -> pa.Table:
    """Held-out sequences -> the same with the `drop` items gone from every history (cold
    items: no event of theirs before the test). The targets stay; `valid_item` is again the
    history's last item, and `too_short` counts what is left (history and target)."""
    if not drop or seqs.num_rows == 0:
        return seqs
    items = seqs["item_ids"].to_pylist()
    keep = [[i not in drop for i in s] for s in items]
    out = seqs
    for name in ("item_ids", "event_types", "timestamps"):
        lists = items if name == "item_ids" else out[name].to_pylist()
        kept = [[v for v, k in zip(values, ks) if k] for values, ks in zip(lists, keep)]
        out = out.set_column(out.schema.get_field_index(name), name,
                             pa.array(kept, SEQUENCES.field(name).type))
    history = out["item_ids"].to_pylist()
    has_target = out["target_item"].is_valid().to_numpy(zero_copy_only=False)
    valid = [h[-1] if len(h) >= 2 else None for h in history]
    left = np.array([len(h) for h in history]) + has_target
    out = out.set_column(out.schema.get_field_index("valid_item"), "valid_item",
                         pa.array(valid, pa.string()))
    return out.set_column(out.schema.get_field_index("too_short"), "too_short",
                          pa.array(left < min_length))


def sequence_text(texts: list[str], event_types: list[str], max_items: int = 20) -> str:
    """A behaviour sequence (oldest first) -> one text, most recent first, e.g.
    'purchase: trail tent; view: ultralight backpack'."""
    recent = list(zip(event_types, texts))[::-1][:max_items]
    return "; ".join(f"{etype}: {text}" for etype, text in recent)
