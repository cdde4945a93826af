"""The events stage on Ray Data: read fragments -> clean -> per-user sequences."""
from __future__ import annotations

import dataclasses

import pyarrow as pa
import ray
from ray.data.expressions import col

from raypipe.events import clean
from raypipe.events import readers, sources
from raypipe.config import CleanConfig, SequenceConfig, SourceConfig
from raypipe.jobs import shuffle
from raypipe.jobs.runtime import fetch, resources, sorted_blocks, to_table
from raypipe.run.artifacts import Folder
from raypipe.run.privacy import Pseudonymizer
from raypipe.run.stages import InputFiles, Runtime, Stage
from raypipe.schema import QUARANTINE, REASON, RECORD
from raypipe.events.sequences import build_sequences, cold_items, drop_items, holdout_last

EVENT_COLUMNS = ["user_id", "item_id", "timestamp", "event_type", "_file", "_row"]


def _fragments(frags: list[sources.Fragment]):
    return ray.data.from_items([dataclasses.asdict(f) for f in frags],
                               override_num_blocks=len(frags))


def _read_items(batch: pa.Table, mapping, text_columns) -> pa.Table:
    return pa.concat_tables([readers.read_items(sources.Fragment(**f), mapping, text_columns)
                             for f in batch.to_pylist()])


def _read_events(batch: pa.Table, mapping, kind, pseudonymizer) -> pa.Table:
    t = pa.concat_tables([readers.read_events(sources.Fragment(**f), mapping, kind)
                          for f in batch.to_pylist()])
    if pseudonymizer is None:
        return t
    records = pseudonymizer.records(t[RECORD], mapping.get("user_id", "user_id"))
    t = t.set_column(t.schema.get_field_index(RECORD), RECORD, records)
    return pseudonymizer.table(t)


def _tag(batch: pa.Table, known_items, strict: bool) -> pa.Table:
    tagged = clean.tag_events(batch, fetch(known_items[0]))
    if strict:
        clean.raise_first_bad(tagged)
    return tagged


def _dedup(batch: pa.Table, strict: bool) -> pa.Table:
    tagged = clean.mark_duplicates(batch)
    if strict:
        clean.raise_first_bad(tagged)
    return tagged


def read_items(cfg: SourceConfig, strict: bool, files: list | None = None,
               not_read: list = ()) -> tuple[pa.Table, pa.Table, dict]:
    """Catalogue -> (items (item_id, text) sorted by id, quarantined rows, row counts).
    `files`: the source's planned fragments, when the caller has them."""
    mapping = sources.column_mapping(cfg)
    files = files or sources.plan_items(cfg)
    ds = _fragments(files).map_batches(
        _read_items, batch_size=1, batch_format="pyarrow",
        fn_kwargs={"mapping": mapping, "text_columns": cfg.text_columns})
    raw = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    tagged = clean.clean_items(raw)
    if strict:
        clean.raise_first_bad(tagged, "items")
    items = clean.kept_rows(tagged, ["item_id", "text"]).sort_by("item_id")
    counts = clean.row_counts(clean.tally(tagged), [f.uri for f in files], not_read)
    return items, clean.quarantine_rows(tagged, "items"), counts


def read_events(cfg: SourceConfig, item_ids: pa.Array, strict: bool, partitions: int,
                pseudonymizer=None, frags: list | None = None, not_read: list = ()):
    """Event logs -> (kept events dataset, quarantined rows dataset, row counts).
    Exact duplicates are found after partitioning by user, so all of a user's rows meet.
    With a `pseudonymizer`, user ids are replaced as soon as they are read. `frags`: the
    source's planned fragments, when the caller has them."""
    mapping = sources.column_mapping(cfg)
    frags = frags or sources.plan_events(cfg)
    sources.check_columns(frags, mapping)
    known = [ray.put(item_ids.combine_chunks() if isinstance(item_ids, pa.ChunkedArray)
                     else item_ids)]     # an Array: the is_in lookup takes it as is
    tagged = (_fragments(frags)
              .map_batches(_read_events, batch_size=1, batch_format="pyarrow",
                           fn_kwargs={"mapping": mapping, "kind": cfg.kind,
                                      "pseudonymizer": pseudonymizer})
              .map_batches(_tag, batch_format="pyarrow",
                           fn_kwargs={"known_items": known, "strict": strict}))
    tagged = shuffle.by_key(tagged, ["user_id"], partitions, _dedup, {"strict": strict},
                            rows=sources.estimated_rows(frags)).materialize()
    counts = clean.row_counts(to_table(tagged.map_batches(clean.tally, batch_format="pyarrow")),
                              [f.uri for f in frags], not_read)
    kept = tagged.filter(expr=col(REASON).is_null()).select_columns(EVENT_COLUMNS)
    bad = tagged.filter(expr=col(REASON).is_not_null()).map_batches(
        clean.quarantine_rows, batch_format="pyarrow", fn_kwargs={"table": "events"})
    return kept, bad, counts


def _sequences(batch: pa.Table, cfg: SequenceConfig, holdout: bool,
               cold: frozenset = frozenset()) -> pa.Table:
    seqs = build_sequences(batch, cfg)
    return drop_items(holdout_last(seqs), cold, cfg.min_length) if holdout else seqs


def build_user_sequences(events, cfg: SequenceConfig, holdout: bool, partitions: int,
                         rows: int = 0, cold: frozenset = frozenset()):
    """Kept events (about `rows`) -> one row per user (materialized), users too short
    included, flagged; rows sorted by user within each block, blocks in a fixed order.
    `cold` (with `holdout`): items whose events leave the histories (drop_items)."""
    return sorted_blocks(shuffle.by_key(events, ["user_id"], partitions, _sequences,
                                        {"cfg": cfg, "holdout": holdout, "cold": cold}, rows),
                         "user_id")


EVENTS_PER_PARTITION = 500_000


def default_partitions(cfg: SequenceConfig, frags: list = ()) -> int:
    """Hash partitions for the group-by-user steps: `sequences.num_partitions`, else two per
    CPU and more for large logs (about EVENTS_PER_PARTITION events in the planned `frags`
    each), since each partition is deduplicated and grouped in one task's memory."""
    if cfg.num_partitions:
        return cfg.num_partitions
    rows = sources.estimated_rows(frags)
    return max(2, 2 * resources()[0], -(-rows // EVENTS_PER_PARTITION))


def events_stage(out: Folder, source: SourceConfig, clean: CleanConfig,
                 sequences: SequenceConfig, holdout: bool, files: InputFiles,
                 pseudonymizer: Pseudonymizer | None, items: Stage, rt: Runtime,
                 cold: tuple | None = None) -> dict:
    """Event files -> `quarantine` (bad rows with their reason) and `sequences` (one row per
    user, time-ordered; with `holdout`, the last item set aside as the target). `cold`:
    (share, seed) of eval.cold_share, the items held out as cold (sequences.cold_mask)."""
    parts = default_partitions(sequences, files)
    with rt.timed("clean"):
        catalogue = items.folder.read("_catalogue")
        events, bad, rows = read_events(source, catalogue["item_id"], clean.strict, parts,
                                        pseudonymizer, files, files.not_read)
        if rows["kept"] == 0:
            raise ValueError(f"no event survived cleaning: {rows}")
        out.dataset("quarantine", bad, QUARANTINE)
    dropped = cold_items(catalogue["item_id"].to_pylist(), *cold) if cold else frozenset()
    with rt.timed("sequences"):
        out.dataset("sequences", build_user_sequences(events, sequences, holdout, parts,
                                                      rows["kept"], dropped))
    privacy = pseudonymizer.stage_key() if pseudonymizer else {"pseudonymized": False}
    return {"rows": rows, "users_with_events": out.tables["sequences"], "privacy": privacy,
            **({"cold_items": len(dropped)} if cold else {})}
