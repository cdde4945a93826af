"""`raypipe report`: one self-contained HTML page that explains a run's segments to people.

Everything is read from the artifacts (no Ray): segment sizes, a 2-D map of a user sample
(PCA of the user vectors) coloured by segment, and per segment its generated name
(distinctive terms, class-based TF-IDF), representative items, event funnel, activity and
recency, the item groups it leans to and how all that differs from the whole population;
then the item groups, segment stability across runs, the run's metrics and data quality.
Charts are inline SVG, so the file opens anywhere without network or plugins.
"""
from __future__ import annotations

import html
import json
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.run.artifacts import MANIFEST, Folder
from raypipe.schema import EVENT_TYPES
from raypipe.arrays import to_numpy

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
           "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"]
MAP_SAMPLE = 3000


def color(segment: int) -> str:
    return PALETTE[segment % len(PALETTE)]


def esc(value) -> str:
    return html.escape(str(value), quote=True)


# ---- charts (inline SVG) -------------------------------------------------------------------

def bar_chart(labels: list[str], values: list[float], colors: list[str], fmt="{:,.0f}",
              title: str = "", width: int = 720) -> str:
    """Horizontal bars, one per label."""
    row, left, right = 22, 260, 70
    height = row * len(labels) + 30
    top = max(values, default=0) or 1
    scale = (width - left - right) / top
    parts = [f'<svg class="chart" role="img" aria-label="{esc(title)}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}">',
             f'<text x="4" y="14" class="title">{esc(title)}</text>']
    for i, (label, v, c) in enumerate(zip(labels, values, colors)):
        y = 24 + i * row
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">'
                     f'{esc(label[:40])}</text>')
        parts.append(f'<rect x="{left}" y="{y + 2}" width="{max(v * scale, 1):.1f}" '
                     f'height="{row - 6}" fill="{c}"/>')
        parts.append(f'<text x="{left + v * scale + 4:.1f}" y="{y + 14}">'
                     f'{esc(fmt.format(v))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def scatter(points: np.ndarray, segments: np.ndarray, title: str, size: int = 520) -> str:
    """2-D points coloured by segment."""
    pad = 12
    lo, hi = points.min(0), points.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    xy = pad + (points - lo) / span * (size - 2 * pad)
    parts = [f'<svg class="chart map" role="img" aria-label="{esc(title)}" width="{size}" '
             f'height="{size}" viewBox="0 0 {size} {size}">',
             f'<rect width="{size}" height="{size}" fill="#fafafa"/>']
    for (x, y), s in zip(xy.tolist(), segments.tolist()):
        parts.append(f'<circle cx="{x:.1f}" cy="{size - y:.1f}" r="2.2" fill="{color(s)}" '
                     f'fill-opacity="0.7"/>')
    parts.append("</svg>")
    return "".join(parts)


def funnel_chart(segment_rates: list[float], population_rates: list[float], c: str,
                 title: str) -> str:
    """The segment's step rates (click/view, cart/click, purchase/cart) beside the
    population's (grey)."""
    steps = ["view→click", "click→cart", "cart→purchase"]
    width, row = 420, 34
    height = 24 + row * len(steps)
    parts = [f'<svg class="chart" role="img" aria-label="{esc(title)}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}">',
             f'<text x="4" y="14" class="title">{esc(title)}</text>']
    for i, (name, s, p) in enumerate(zip(steps, segment_rates, population_rates)):
        y = 22 + i * row
        parts.append(f'<text x="110" y="{y + 16}" text-anchor="end">{name}</text>')
        parts.append(f'<rect x="116" y="{y + 2}" width="{max(s, 0) * 240:.1f}" height="12" '
                     f'fill="{c}"/>')
        parts.append(f'<rect x="116" y="{y + 16}" width="{max(p, 0) * 240:.1f}" height="8" '
                     f'fill="#bbb"/>')
        parts.append(f'<text x="{122 + max(s, p, 0) * 240:.1f}" y="{y + 16}">'
                     f'{s:.1%} (all {p:.1%})</text>')
    parts.append("</svg>")
    return "".join(parts)


# ---- what the charts show -----------------------------------------------------------------

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

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1100px;color:#222;padding:0 16px}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
.meta{color:#666} table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}
th{background:#f4f4f4} .segment{border:1px solid #e4e4e4;border-radius:6px;padding:12px 16px;
margin:16px 0} .swatch{display:inline-block;width:14px;height:14px;border-radius:3px;
margin-right:6px;vertical-align:middle} .chart text{font-size:12px;fill:#333}
.chart .title{font-weight:600} .grid{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.terms span{background:#eef;border-radius:3px;padding:1px 6px;margin:2px;display:inline-block}
.diff{color:#555}
"""


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "–"


def build(artifacts: str) -> str:
    """The report's HTML for the run in `artifacts` (a folder or URI)."""
    art = Folder(artifacts)
    manifest = json.loads(art.read_bytes(MANIFEST))
    segments = art.read("segments").sort_by("segment")
    profiles = art.read("profiles", ["user_id", "segment", "confidence", "n_events",
                                     *[f"n_{e}" for e in EVENT_TYPES]])
    items = art.read("items")
    n = segments.num_rows
    seg_rows = segments.to_pylist()
    stats, overall = segment_stats(profiles, n)
    sequences = art.read("sequences", ["user_id", "timestamps"])
    recency, recency_all, has_clock = recency_days(sequences, profiles, n)
    has_groups = "group" in items.column_names
    sample = sample_rows(art, "user_embeddings", MAP_SAMPLE, ["user_id", "vector"])
    at = pd.Index(profiles["user_id"].to_numpy(zero_copy_only=False)).get_indexer(
        sample["user_id"].to_numpy(zero_copy_only=False))
    sample_segments = profiles["segment"].to_numpy()[at[at >= 0]]
    vectors = to_numpy(sample["vector"])[at >= 0]
    points = pca_2d(vectors) if len(vectors) > 2 else np.zeros((0, 2))

    names = [r["name"] or f"segment {r['segment']}" for r in seg_rows]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>raypipe report</title>"
           f"<style>{CSS}</style></head><body>",
           "<h1>Segments report</h1>",
           f"<p class='meta'>run {esc(manifest.get('created_at'))} · raypipe "
           f"{esc(manifest.get('raypipe_version'))} · config {esc(manifest.get('config_hash'))}"
           f" · {manifest['users']['profiled']:,} users profiled · {items.num_rows:,} items · "
           f"{n} segments · report written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
           f"</p>"]

    out.append("<section id='sizes'><h2>Segment sizes</h2>")
    out.append(bar_chart([f"{r['segment']}: {nm}" for r, nm in zip(seg_rows, names)],
                         [r["size"] for r in seg_rows], [color(r["segment"]) for r in seg_rows],
                         title="users per segment"))
    out.append("</section>")

    out.append("<section id='map'><h2>Map of users</h2>")
    out.append(f"<p>{len(points):,} users sampled at random, their vectors projected on "
               f"the first two principal components, coloured by segment.</p>")
    out.append("<div class='grid'>" + scatter(points, sample_segments, "users by segment (PCA)"))
    out.append("<div>" + "".join(
        f"<div><span class='swatch' style='background:{color(r['segment'])}'></span>"
        f"{r['segment']}: {esc(nm)}</div>" for r, nm in zip(seg_rows, names)) + "</div></div>")
    out.append("</section>")

    pop_rates = funnel_rates(overall["counts"])
    shares, overall_shares = group_shares(items, segments) if has_groups else ({}, None)
    group_names = _group_names(items) if has_groups else {}
    stability = (manifest.get("segment_ids") or {})
    out.append("<section id='segments'><h2>Segments</h2>")
    for r, nm, st, rec in zip(seg_rows, names, stats, recency):
        s = r["segment"]
        rates = funnel_rates(st["counts"])
        out.append(f"<div class='segment' id='segment-{s}'>")
        out.append(f"<h3><span class='swatch' style='background:{color(s)}'></span>"
                   f"Segment {s}: {esc(nm)}</h3>")
        out.append(f"<p>{r['size']:,} users ({r['size'] / max(overall['users'], 1):.1%} of "
                   f"all) · {st['events_mean']:.1f} events per user (all: "
                   f"{overall['events_mean']:.1f}, {_ratio(st['events_mean'], overall['events_mean'])})"
                   + (f" · median {rec:.1f} days since the last event (all: {recency_all:.1f})"
                      if has_clock else "")
                   + f" · median confidence {st['confidence_median']:.2f}</p>")
        out.append("<p class='terms'>" + "".join(f"<span>{esc(t)}</span>"
                                                  for t in r["top_terms"]) + "</p>")
        out.append("<div class='grid'>")
        if overall["counts"][EVENT_TYPES[0]] > 0:
            out.append(funnel_chart(rates, pop_rates, color(s), "event funnel (grey: all users)"))
        else:
            out.append(f"<p>No funnel: this log has no {EVENT_TYPES[0]} events (only "
                       + ", ".join(e for e in EVENT_TYPES if overall["counts"][e] > 0) + ").</p>")
        items_rows = [[esc(i), esc(t)] for i, t in zip(r["top_items"], r["top_item_texts"])]
        out.append("<div><b>Representative items</b>" +
                   _table(items_rows[:8], ["item", "text"]) + "</div>")
        out.append("</div>")
        diffs = [f"{e}: {st['counts'][e] / max(st['users'], 1):.2f} per user "
                 f"({_ratio(st['counts'][e] / max(st['users'], 1), overall['counts'][e] / max(overall['users'], 1))} of all)"
                 for e in EVENT_TYPES]
        if has_groups and s in shares:
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
        out.append("<p class='diff'>Compared with all users: " + "; ".join(diffs) + "</p>")
        out.append("</div>")
    out.append("</section>")

    if has_groups:
        out.append("<section id='item-groups'><h2>Item groups</h2>")
        sizes = np.bincount(items["group"].to_numpy())
        rows = []
        texts = items["text"].to_pylist()
        group_col = items["group"].to_numpy()
        for g, size in enumerate(sizes.tolist()):
            examples = [texts[i] for i in np.flatnonzero(group_col == g)[:3]]
            rows.append([str(g), esc(group_names.get(g, "")), f"{size:,}",
                         "<br>".join(esc(t) for t in examples)])
        out.append(_table(rows, ["group", "name", "items", "examples"]))
        out.append("</section>")

    out.append("<section id='stability'><h2>Segment ids across runs</h2>")
    if stability.get("reference"):
        users = stability.get("users") or {}
        out.append(f"<p>Matched to the previous run at {esc(stability['reference'])} "
                   f"(Hungarian matching of centroids). Users in both runs: "
                   f"{users.get('users_in_both_runs', 0):,}; share that changed segment: "
                   f"{users.get('changed_share')}.</p>")
    else:
        out.append(f"<p>{esc(stability.get('note', 'No previous run to match: ids are as K-means numbered them.'))}</p>")
    out.append("</section>")

    out.append("<section id='quality'><h2>Metrics and data quality</h2>")
    rows = [[esc(k), esc(v)] for k, v in _flat(manifest.get("rows", {}))]
    rows += [["users " + esc(k), esc(v)] for k, v in manifest.get("users", {}).items()]
    out.append(_table(rows, ["count", "value"]))
    metrics = manifest.get("metrics") or {}
    if metrics:
        out.append("<pre>" + esc(json.dumps(metrics, indent=1)[:6000]) + "</pre>")
    else:
        out.append("<p>No evaluation metrics in this run (run with --holdout last).</p>")
    out.append("</section></body></html>")
    return "\n".join(out)


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
    art = Folder(artifacts)
    path = out or art.child("report.html")
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(page)
    else:
        art.bytes("report.html", page.encode())
    return path

