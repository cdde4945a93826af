"""Pseudonymous user ids and forgetting users. Knows nothing about Ray.

With `privacy.pseudonymize: true`, every user id is replaced right after it is read by
`HMAC-SHA256(key, id)` (32 hex digits), so no table, quarantine record or log line of the run
holds a raw id. The key comes from `RAYPIPE_PSEUDONYM_KEY` or from the file named by
`RAYPIPE_PSEUDONYM_KEY_FILE` (a mounted secret); it is never written anywhere. The manifest
keeps only a check value (an HMAC of a fixed string) so that the service can refuse a key
that does not match the run. The same key maps ids for the service's lookups.

Forgetting a user (`raypipe forget`) is run/forget.py.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os

import pyarrow as pa
import pyarrow.compute as pc

KEY_ENV, KEY_FILE_ENV = "RAYPIPE_PSEUDONYM_KEY", "RAYPIPE_PSEUDONYM_KEY_FILE"


def load_key() -> bytes:
    """The pseudonymisation key from the environment or the secret file; refuses a short
    one (HMAC keys under 16 bytes are guessable)."""
    key = os.environ.get(KEY_ENV)
    if key is None and os.environ.get(KEY_FILE_ENV):
        with open(os.environ[KEY_FILE_ENV], "rb") as f:
            key = f.read().strip().decode()
    if not key:
        raise ValueError(f"privacy.pseudonymize is on but no key is set: put one in "
                         f"{KEY_ENV} or in a file named by {KEY_FILE_ENV}")
    if len(key) < 16:
        raise ValueError(f"the pseudonymisation key is {len(key)} characters; use 16 or more")
    return key.encode()


class Pseudonymizer:
    """id -> HMAC-SHA256(key, id)[:32 hex]; shipped to Ray workers, never printed."""

    def __init__(self, key: bytes):
        self._key = key

    def __repr__(self) -> str:
        return "Pseudonymizer(<key hidden>)"

    @property
    def check(self) -> str:
        """A value that identifies the key without revealing it (for the manifest)."""
        return self.one("raypipe key check")

    def stage_key(self) -> dict:
        """In a stage key: which key pseudonymised the ids (a run with another key differs)."""
        return {"pseudonymized": True, "key_check": self.check}

    def one(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()[:32]

    def array(self, ids: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Each distinct id hashed once; nulls stay null."""
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        encoded = pc.dictionary_encode(ids.cast(pa.string()))
        hashed = pa.array([None if v is None else self.one(v)
                           for v in encoded.dictionary.to_pylist()], pa.string())
        return pc.take(hashed, encoded.indices)

    def records(self, records, user_column: str) -> pa.Array:
        """Raw records kept for the quarantine -> the same with the user's id pseudonymised
        where the record is a JSON object holding it; a record the reader could not parse
        (a raw line may hold a raw id anywhere) is replaced by its size only."""
        out = []
        for r in (records.to_pylist() if records is not None else []):
            if r is None:
                out.append(None)
                continue
            try:
                obj = json.loads(r)
            except (ValueError, RecursionError):
                obj = None
            if isinstance(obj, dict) and obj.get(user_column) is not None:
                obj[user_column] = self.one(str(obj[user_column]))
                out.append(json.dumps(obj, sort_keys=True))
            else:
                out.append(json.dumps({"redacted": "a raw record of a pseudonymised run",
                                       "bytes": len(r.encode("utf-8", "surrogatepass"))}))
        return pa.array(out, pa.string())

    def table(self, t: pa.Table, column: str = "user_id") -> pa.Table:
        if column not in t.column_names:
            return t
        i = t.column_names.index(column)
        return t.set_column(i, column, self.array(t[column]))


def pseudonymizer(enabled: bool) -> Pseudonymizer | None:
    return Pseudonymizer(load_key()) if enabled else None


def stored_id(manifest: dict, user_id: str) -> str:
    """The id under which the run stores `user_id`: itself, or its pseudonym (the key from
    the environment must be the run's)."""
    privacy = manifest.get("privacy") or {}
    if not privacy.get("pseudonymized"):
        return user_id
    p = Pseudonymizer(load_key())
    if p.check != privacy.get("key_check"):
        raise ValueError("the pseudonymisation key in the environment is not the one this "
                         "run was made with")
    return p.one(user_id)
