"""The report's example users: per segment, its most confidently placed users with their
recommendations and why (the `reason`, cited items and sentence of recommendations.parquet,
recommend/explain.py). Reads only the users shown, through a filter on the table."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.readouts.charts import esc, table

PER_SEGMENT = 3     # example users per segment
ITEMS = 3           # recommendations shown per example user


def pick_users(profiles: pa.Table, n_segments: int, per: int = PER_SEGMENT) -> dict:
    """{segment: its `per` users with the highest confidence (ties by user id)}."""
    order = profiles.sort_by([("segment", "ascending"), ("confidence", "descending"),
                              ("user_id", "ascending")])
    out: dict = {}
    for user, seg in zip(order["user_id"].to_pylist(), order["segment"].to_pylist()):
        if len(out.setdefault(seg, [])) < per:
            out[seg].append(user)
    return {s: out.get(s, []) for s in range(n_segments)}


def section(art, profiles: pa.Table, names: list[str], strategies: list[str],
            items: pa.Table) -> str:
    """<section id='examples'>, or a note where the run's recommendations carry no reasons
    (recommend.explain off, or artifacts older than explanations)."""
    head = "<section id='examples'><h2>Example users and why they get what they get</h2>"
    path = f"{art.path}/recommendations.parquet"
    schema = pq.ParquetDataset(path, filesystem=art.fs).schema \
        if art.exists("recommendations.parquet") else None
    if schema is None or "reason" not in schema.names:
        return head + "<p>This run's recommendations carry no reasons (recommend.explain " \
                      "was off, or the run predates explanations).</p></section>"
    strategy = "blend" if "blend" in strategies else strategies[0]
    users = pick_users(profiles, len(names))
    wanted = [u for us in users.values() for u in us]
    recs = pq.read_table(path, filesystem=art.fs, filters=[
        ("strategy", "=", strategy), ("user_id", "in", wanted), ("rank", "<=", ITEMS)],
        columns=["user_id", "rank", "item_id", "reason", "explanation"])
    text = dict(zip(items["item_id"].to_pylist(), items["text"].to_pylist()))
    by_user: dict = {}
    for r in recs.sort_by([("user_id", "ascending"), ("rank", "ascending")]).to_pylist():
        by_user.setdefault(r["user_id"], []).append(r)
    out = [head, f"<p>Per segment, its {PER_SEGMENT} most confidently placed users and their "
           f"first {ITEMS} `{esc(strategy)}` recommendations, each with its reason and the "
           "history items behind it.</p>"]
    for s, nm in enumerate(names):
        rows = [[esc(u), esc(r["rank"]), esc(text.get(r["item_id"], r["item_id"])),
                 esc(r["reason"]), esc(r["explanation"])]
                for u in users[s] for r in by_user.get(u, [])]
        out.append(f"<h3>Segment {s}: {esc(nm)}</h3>" + (table(
            rows, ["user", "rank", "item", "reason", "why"]) if rows else
            "<p>No recommendations for its users.</p>"))
    return "\n".join(out + ["</section>"])

