"""`raypipe report`: one self-contained HTML page that explains a run's segments to people.

Everything is read from the artifacts (no Ray): segment sizes, how their number was chosen
(choosing.py), a 2-D map of a user sample (PCA of the user vectors) coloured by segment, and
per segment its generated name (distinctive terms, class-based TF-IDF), representative
items, event funnel, activity and recency, the item groups it leans to and how all that
differs from the whole population; example users with their explained recommendations
(examples.py); then the item groups, segment stability across runs, the run's metrics and
data quality. Charts are inline SVG: the file opens anywhere.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.arrays import to_numpy
from raypipe.readouts import choosing, examples, tree
from raypipe.readouts.charts import CSS, bar_chart, color, esc, funnel_chart, ratio, scatter, table
from raypipe.run.artifacts import MANIFEST, Folder
from raypipe.run.versions import current_run
from raypipe.segments.segmentation import level_rows
from raypipe.schema import EVENT_TYPES

MAP_SAMPLE = 3000


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    centred = vectors - vectors.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def sample_rows(folder: Folder, name: str, n: int, columns: list[str],
                seed: int = 0) -> pa.Table:
    """A uniform sample of n rows of a (possibly large) table, read batch by batch."""
    fs = folder.fs
    files = folder.files(f"{name}.parquet")
    total = sum(pq.ParquetFile(fs.open_input_file(f)).metadata.num_rows for f in files)
    keep = np.sort(np.random.default_rng(seed).choice(total, min(n, total), replace=False))
    parts, start = [], 0
    for f in files:
        for batch in pq.ParquetFile(fs.open_input_file(f)).iter_batches(columns=columns):
            sel = keep[(keep >= start) & (keep < start + batch.num_rows)] - start
            if len(sel):
                parts.append(pa.Table.from_batches([batch]).take(pa.array(sel)))
            start += batch.num_rows
    return pa.concat_tables(parts) if parts else pa.table({c: [] for c in columns})


def funnel_rates(counts: dict[str, float]) -> list[float]:
    steps = list(EVENT_TYPES)
    return [counts[b] / counts[a] if counts[a] else 0.0 for a, b in zip(steps, steps[1:])]


def segment_stats(profiles: pa.Table, n_segments: int) -> tuple[list[dict], dict]:
    """Per segment and overall: users, events per user (mean, median), event counts."""
    seg = profiles["segment"].to_numpy()
    events = profiles["n_events"].to_numpy().astype(np.float64)
    counts = {e: profiles[f"n_{e}"].to_numpy().astype(np.float64) for e in EVENT_TYPES}
    conf = profiles["confidence"].to_numpy()

    def stats(mask):
        n = int(mask.sum())
        return {"users": n,
                "events_mean": float(events[mask].mean()) if n else 0.0,
                "events_median": float(np.median(events[mask])) if n else 0.0,
                "confidence_median": float(np.median(conf[mask])) if n else 0.0,
                "counts": {e: float(c[mask].sum()) for e, c in counts.items()}}
    return [stats(seg == s) for s in range(n_segments)], stats(np.ones(len(seg), bool))


def recency_days(sequences: pa.Table, profiles: pa.Table,
                 n_segments: int) -> tuple[list, float, bool]:
    """Median days since each segment's users' last event (the clock: the log's last event),
    overall, and whether the timestamps are times at all."""
    ts = sequences["timestamps"].combine_chunks()
    ends = ts.offsets.to_numpy()[1:] - 1
    flat = ts.flatten()
    last = pc.cast(flat, pa.int64()).to_numpy()[ends - ts.offsets.to_numpy()[0]] \
        if len(ts) else np.zeros(0, np.int64)
    table = pa.table({"user_id": sequences["user_id"], "last": last}).join(
        profiles.select(["user_id", "segment"]), "user_id")
    unit = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[flat.type.unit] \
        if pa.types.is_timestamp(flat.type) else 1
    last, seg = table["last"].to_numpy(), table["segment"].to_numpy()
    age = (last.max(initial=0) - last) / unit / 86400.0
    per = [float(np.median(age[seg == s])) if (seg == s).any() else 0.0
           for s in range(n_segments)]
    # Logs with ordinal positions instead of times (some public datasets) span no days.
    has_clock = bool(len(last)) and last.max() / unit > 86400 * 365
    return per, (float(np.median(age)) if len(age) else 0.0), has_clock


def group_shares(items: pa.Table, segments: pa.Table) -> tuple[dict, np.ndarray]:
    """Share of each segment's top items falling in each item group (a light proxy for what
    it buys), and the catalogue's share per group."""
    n_groups = int(pc.max(items["group"]).as_py()) + 1
    group_of = dict(zip(items["item_id"].to_pylist(), items["group"].to_pylist()))
    overall = np.bincount(items["group"].to_numpy(), minlength=n_groups) / max(items.num_rows, 1)
    out = {}
    for row in segments.to_pylist():
        g = [group_of[i] for i in row["top_items"] if i in group_of]
        out[row["segment"]] = np.bincount(g, minlength=n_groups) / max(len(g), 1)
    return out, overall


# ---- the page -----------------------------------------------------------------------------

def _flat(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _group_names(items: pa.Table) -> dict[int, str]:
    names = {}
    if "group_name" in items.column_names:
        for g, nm in zip(items["group"].to_pylist(), items["group_name"].to_pylist()):
            names.setdefault(g, nm)
    return names


def write(artifacts: str, out: str | None = None) -> str:
    """Write report.html into the artifacts folder (or `out`); return its path."""
    page = build(artifacts)
    art = Folder(current_run(artifacts))
    path = out or art.child("report.html")
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(page)
    else:
        art.bytes("report.html", page.encode())
    return path


def build(artifacts: str) -> str:
    """The report's HTML for the run in `artifacts` (a folder or URI)."""
    run = _Run(Folder(current_run(artifacts)))
    return "\n".join([
        f"<!doctype html><html><head><meta charset='utf-8'><title>raypipe report</title>"
        f"<style>{CSS}</style></head><body>", "<h1>Segments report</h1>", _header(run),
        _sizes(run), choosing.section(run.manifest, run.sweep), _map(run), _segments(run),
        examples.section(run.art, run.profiles, run.names,
                         list(run.manifest["config"]["recommend"]["strategies"]), run.items),
        tree.section(run.all_segments.to_pylist(), run.manifest.get("hierarchy")),
        _item_groups(run), choosing.ids_section(run.stability),
        _quality(run.manifest), "</body></html>"])


class _Run:
    """What the report reads of a run, read once."""

    def __init__(self, art: Folder):
        self.art, self.manifest = art, json.loads(art.read_bytes(MANIFEST))
        self.all_segments = art.read("segments")
        self.segments = level_rows(self.all_segments, self.manifest["kmeans"]["n_clusters"])
        self.profiles = art.read("profiles", ["user_id", "segment", "confidence", "n_events",
                                              *[f"n_{e}" for e in EVENT_TYPES]])
        self.items = art.read("items")
        self.n, self.rows = self.segments.num_rows, self.segments.to_pylist()
        self.stats, self.overall = segment_stats(self.profiles, self.n)
        self.recency, self.recency_all, self.has_clock = recency_days(
            art.read("sequences", ["user_id", "timestamps"]), self.profiles, self.n)
        self.has_groups = "group" in self.items.column_names
        self.names = [r["name"] or f"segment {r['segment']}" for r in self.rows]
        self.stability = self.manifest.get("segment_ids") or {}
        self.sweep = art.read("segment_sweep").to_pylist() if art.exists(
            "segment_sweep.parquet") else None


def _header(run: _Run) -> str:
    m = run.manifest
    return (f"<p class='meta'>run {esc(m.get('created_at'))} · raypipe "
            f"{esc(m.get('raypipe_version'))} · config {esc(m.get('config_hash'))}"
            f" · {m['users']['profiled']:,} users profiled · {run.items.num_rows:,} items · "
            f"{run.n} segments · report written "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>")


def _sizes(run: _Run) -> str:
    return ("<section id='sizes'><h2>Segment sizes</h2>" + bar_chart(
        [f"{r['segment']}: {nm}" for r, nm in zip(run.rows, run.names)],
        [r["size"] for r in run.rows], [color(r["segment"]) for r in run.rows],
        title="users per segment") + "</section>")


def _map(run: _Run) -> str:
    """A random sample of user vectors on their first two principal components."""
    sample = sample_rows(run.art, "user_embeddings", MAP_SAMPLE, ["user_id", "vector"])
    at = pd.Index(run.profiles["user_id"].to_numpy(zero_copy_only=False)).get_indexer(
        sample["user_id"].to_numpy(zero_copy_only=False))
    segments = run.profiles["segment"].to_numpy()[at[at >= 0]]
    vectors = to_numpy(sample["vector"])[at >= 0]
    points = pca_2d(vectors) if len(vectors) > 2 else np.zeros((0, 2))
    legend = "".join(f"<div><span class='swatch' style='background:{color(r['segment'])}'>"
                     f"</span>{r['segment']}: {esc(nm)}</div>"
                     for r, nm in zip(run.rows, run.names))
    return (f"<section id='map'><h2>Map of users</h2><p>{len(points):,} users sampled at "
            f"random, their vectors projected on the first two principal components, "
            f"coloured by segment.</p><div class='grid'>"
            + scatter(points, segments, "users by segment (PCA)")
            + f"<div>{legend}</div></div></section>")


def _segments(run: _Run) -> str:
    shares, overall_shares = group_shares(run.items, run.segments) if run.has_groups \
        else ({}, None)
    group_names = _group_names(run.items) if run.has_groups else {}
    out = ["<section id='segments'><h2>Segments</h2>"]
    for r, nm, st, rec in zip(run.rows, run.names, run.stats, run.recency):
        out.append(_segment(run, r, nm, st, rec, shares, overall_shares, group_names))
    return "\n".join(out + ["</section>"])


def _segment(run: _Run, r: dict, nm: str, st: dict, rec: float, shares: dict,
             overall_shares, group_names: dict) -> str:
    """One segment: size, activity, terms, funnel, representative items, differences."""
    s, overall = r["segment"], run.overall
    out = [f"<div class='segment' id='segment-{s}'>",
           f"<h3><span class='swatch' style='background:{color(s)}'></span>"
           f"Segment {s}: {esc(nm)}</h3>",
           f"<p>{r['size']:,} users ({r['size'] / max(overall['users'], 1):.1%} of "
           f"all) · {st['events_mean']:.1f} events per user (all: "
           f"{overall['events_mean']:.1f}, {ratio(st['events_mean'], overall['events_mean'])})"
           + (f" · median {rec:.1f} days since the last event (all: {run.recency_all:.1f})"
              if run.has_clock else "")
           + f" · median confidence {st['confidence_median']:.2f}</p>",
           "<p class='terms'>" + "".join(f"<span>{esc(t)}</span>" for t in r["top_terms"])
           + "</p>", "<div class='grid'>"]
    if overall["counts"][EVENT_TYPES[0]] > 0:
        out.append(funnel_chart(funnel_rates(st["counts"]), funnel_rates(overall["counts"]),
                                color(s), "event funnel (grey: all users)"))
    else:
        out.append(f"<p>No funnel: this log has no {EVENT_TYPES[0]} events (only "
                   + ", ".join(e for e in EVENT_TYPES if overall["counts"][e] > 0) + ").</p>")
    items_rows = [[esc(i), esc(t)] for i, t in zip(r["top_items"], r["top_item_texts"])]
    out.append("<div><b>Representative items</b>" + table(items_rows[:8], ["item", "text"])
               + "</div></div>")
    diffs = _differences(run, s, st, shares, overall_shares, group_names)
    out.append("<p class='diff'>Compared with all users: " + "; ".join(diffs) + "</p></div>")
    return "\n".join(out)


def _differences(run: _Run, s: int, st: dict, shares: dict, overall_shares,
                 group_names: dict) -> list[str]:
    """How segment s differs from all users: events per user, item groups, stability."""
    overall, n, stability = run.overall, run.n, run.stability
    diffs = [f"{e}: {st['counts'][e] / max(st['users'], 1):.2f} per user "
             f"({ratio(st['counts'][e] / max(st['users'], 1), overall['counts'][e] / max(overall['users'], 1))} of all)"
             for e in EVENT_TYPES]
    if run.has_groups and s in shares:
        lift = shares[s] / np.maximum(overall_shares, 1e-9)
        top = [g for g in np.argsort(-lift) if shares[s][g] > 0][:3]
        diffs.append("leans to item groups: " + ", ".join(
            f"{esc(group_names.get(g, g))} ({lift[g]:.1f}x)" for g in top))
    moved = (stability.get("moved") or [None] * n)[s] if stability else None
    changed = ((stability.get("users") or {}).get("per_segment") or [None] * n)[s] \
        if stability else None
    if moved is not None:
        diffs.append(f"centroid moved {moved:.3f} since the previous run; "
                     + (f"{changed:.1%} of its users were in another segment"
                        if changed is not None else "no user in both runs"))
    return diffs


def _item_groups(run: _Run) -> str:
    if not run.has_groups:
        return ""
    items, names = run.items, _group_names(run.items)
    texts, group_col = items["text"].to_pylist(), items["group"].to_numpy()
    rows = []
    for g, size in enumerate(np.bincount(group_col).tolist()):
        examples = [texts[i] for i in np.flatnonzero(group_col == g)[:3]]
        rows.append([str(g), esc(names.get(g, "")), f"{size:,}",
                     "<br>".join(esc(t) for t in examples)])
    return ("<section id='item-groups'><h2>Item groups</h2>"
            + table(rows, ["group", "name", "items", "examples"]) + "</section>")


def _quality(manifest: dict) -> str:
    rows = [[esc(k), esc(v)] for k, v in _flat(manifest.get("rows", {}))]
    rows += [["users " + esc(k), esc(v)] for k, v in manifest.get("users", {}).items()]
    metrics = manifest.get("metrics") or {}
    body = ("<pre>" + esc(json.dumps(metrics, indent=1)[:6000]) + "</pre>") if metrics else \
        "<p>No evaluation metrics in this run (run with --holdout last).</p>"
    return ("<section id='quality'><h2>Metrics and data quality</h2>"
            + table(rows, ["count", "value"]) + body + "</section>")
