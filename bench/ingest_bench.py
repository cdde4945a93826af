"""Reader throughput: records/s of events/readers.py (every record accounted for, bad ones
quarantined) against pyarrow's own readers (which stop at the first bad record), on the same
files in the same run, for CSV, JSON Lines and Parquet, clean and with 1% bad records.

    .venv/bin/python bench/ingest_bench.py [--events 200000]

One JSON line per (format, bad share): records/s of raypipe's reader, of the baseline, and
their ratio. The baseline cannot read a file with bad records at all; there the ratio is
against the clean file's baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from raypipe.events import sources

try:
    from raypipe.events.readers import read_events
except ImportError:                         # raypipe before the robust readers
    read_events = sources.read_events


def log(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "user_id": [f"u{u:07d}" for u in rng.integers(0, n // 20, n)],
        "item_id": [f"i{i:06d}" for i in rng.integers(0, 20000, n)],
        "timestamp": (1_700_000_000 + rng.integers(0, 10**7, n)).astype(str),
        "event_type": rng.choice(["view", "click", "cart", "purchase"], n),
        "price": np.round(rng.uniform(1, 100, n), 2).astype(str)})


def write(t: pa.Table, folder: str, fmt: str, bad: float) -> str:
    path = os.path.join(folder, f"log-{fmt}-{bad}.{fmt}")
    lines = None
    if fmt == "parquet":
        pq.write_table(t, path)
        return path
    if fmt == "csv":
        buf = pa.BufferOutputStream()
        pacsv.write_csv(t, buf)
        lines = buf.getvalue().to_pybytes().split(b"\n")
        head, body = lines[:1], lines[1:-1]
    else:
        body = [json.dumps(r).encode() for r in t.to_pylist()]
        head = []
    rng = np.random.default_rng(1)
    for i in rng.choice(len(body), int(len(body) * bad), replace=False):
        body[i] = body[i][: len(body[i]) // 2] + b"\xff"          # cut short, not UTF-8
    with open(path, "wb") as f:
        f.write(b"\n".join(head + body) + b"\n")
    return path


def ours(path: str) -> int:
    return sum(read_events(f, {}, "events").num_rows
               for f in sources.plan_tables(path))


def baseline(path: str) -> int:
    if path.endswith(".parquet"):
        return pq.read_table(path).num_rows
    if path.endswith(".csv"):
        return pacsv.read_csv(path).num_rows
    return pajson.read_json(path).num_rows


def timed(fn, path: str, repeats: int = 3) -> tuple[float, int]:
    best, n = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        n = fn(path)
        best = min(best, time.perf_counter() - start)
    return best, n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=200_000)
    args = p.parse_args()
    t = log(args.events)
    with tempfile.TemporaryDirectory() as d:
        for fmt in ("csv", "jsonl", "parquet"):
            clean_base = None
            for bad in ((0.0, 0.01) if fmt != "parquet" else (0.0,)):
                path = write(t, d, fmt, bad)
                try:
                    secs, n = timed(ours, path)
                except Exception as exc:            # noqa: BLE001 - raypipe before #18
                    print(json.dumps({"bench": "ingest", "format": fmt, "bad_share": bad,
                                      "error": f"{type(exc).__name__}: {exc}"[:200]}))
                    continue
                try:
                    base_secs, _ = timed(baseline, path)
                    clean_base = clean_base or base_secs
                except (pa.ArrowInvalid, UnicodeDecodeError):
                    base_secs = None                # the baseline stops at a bad record
                ref = base_secs or clean_base
                print(json.dumps({
                    "bench": "ingest", "format": fmt, "bad_share": bad, "records": n,
                    "records_per_s": round(n / secs), "baseline": "pyarrow read "
                    + ("(fails on this file; clean file's time)" if base_secs is None else ""),
                    "baseline_records_per_s": round(args.events / ref),
                    "ratio_to_baseline": round((n / secs) / (args.events / ref), 3)}),
                    flush=True)


if __name__ == "__main__":
    main()
