"""A fresh sequence's request, cleaned as the batch job cleans logs: the events as the raw
event table the readers produce, the refusals (the caller's mistakes), and the `Plan` of
what must be embedded before the service can answer. Knows nothing about Ray or HTTP."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from raypipe.schema import DEFAULT_EVENT_TYPE, FILE, REASON, ROW

REQUEST_USER = "request"


class Refused(Exception):
    """The request's fault, not the service's; the message names the problem."""


class UnknownUser(Refused):
    """The artifacts have no profile for this user id."""


class BadRequest(Refused):
    """A request that cannot be answered as asked (events, strategy)."""


@dataclass
class Plan:
    """A fresh sequence, cleaned and built as the batch job builds one, and what it needs
    embedded: `texts[i]` with at most `max_lengths[i]` tokens."""
    user_id: str
    item_ids: list[str]           # the sequence, oldest first (after dedup and truncation)
    event_types: list[str]
    rows: np.ndarray              # catalogue rows; items given inline are n, n + 1, ...
    counts: dict                  # n_events, n_view, ... as in `profiles`
    new_items: list[str]          # items outside the catalogue, given with text
    unknown_items: list[str]      # items neither in the catalogue nor given text: left out
    texts: list[str] = field(default_factory=list)
    max_lengths: list[int] = field(default_factory=list)


def events_table(events: list[dict]) -> pa.Table:
    """Request events -> the raw event schema the readers produce, one request user."""
    n = len(events)
    return pa.table({
        "user_id": pa.array([REQUEST_USER] * n, pa.string()),
        "item_id": pa.array([str(e["item_id"]) for e in events], pa.string()),
        "timestamp": pa.array([None if e.get("timestamp") is None else str(e["timestamp"])
                               for e in events], pa.string()),
        "event_type": pa.array([e.get("event_type") or DEFAULT_EVENT_TYPE for e in events],
                               pa.string()),
        "price": pa.nulls(n, pa.float64()), "quantity": pa.nulls(n, pa.float64()),
        FILE: pa.array(["request"] * n, pa.string()), ROW: pa.array(range(n), pa.int64()),
    })


def refuse(tagged: pa.Table) -> None:
    """Bad timestamps or event types are the caller's mistake: refuse, naming the events.
    Unknown items and exact repeats are not: they are left out, as in the batch job."""
    reasons = tagged[REASON].to_pylist()
    bad = [(i, r) for i, r in enumerate(reasons)
           if r not in (None, "item_without_text", "duplicate_event")]
    if bad:
        shown = ", ".join(f"events[{i}]: {r}" for i, r in bad[:5])
        raise BadRequest(f"{len(bad)} events cannot be used ({shown})")
