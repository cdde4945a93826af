"""One writer per output: `raypipe run` and `raypipe forget` hold `<output>.lock` while they
write, so a second writer refuses, naming the holder, instead of deleting the first one's
temporary folders or rolling back its commit.

The lock is created exclusively: `O_CREAT | O_EXCL` on a local disk; a conditional PUT
(`If-None-Match: *`, S3's and S3-compatible stores' atomic create) on `s3://`. Other object
stores have no exclusive create through pyarrow: there the lock is written after a check and
read back, which narrows the race without closing it (documented in the README).

A holder rewrites the lock every HEARTBEAT_S seconds. A lock is stale, and taken over, when
its process is gone (same host) or its heartbeat is older than STALE_AFTER_S (any host).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid

import pyarrow.fs as pafs

from raypipe.run import paths as rio

log = logging.getLogger("raypipe")
HEARTBEAT_S = 30
STALE_AFTER_S = 300


class OutputLocked(RuntimeError):
    """Another `raypipe run` or `forget` is writing this output."""


def lock_uri(output: str) -> str:
    return output.rstrip("/") + ".lock"


class OutputLock:
    """`with OutputLock(output, "run"):` holds the output's lock for the block."""

    def __init__(self, output: str, purpose: str):
        self.uri, self.purpose = lock_uri(output), purpose
        self.fs, self.path = rio.resolve(self.uri)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # ---- the holder's record ---------------------------------------------------------

    def _record(self, started: str | None = None) -> bytes:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return json.dumps({"purpose": self.purpose, "pid": os.getpid(),
                           "host": socket.gethostname(), "started_at": started or now,
                           "heartbeat": time.time(), "token": self.token}).encode()

    def holder(self) -> dict | None:
        """The lock's record, {} when it cannot be read (being written), None when absent."""
        try:
            with self.fs.open_input_stream(self.path) as f:
                data = f.read()
        except (FileNotFoundError, OSError):
            return None if self.fs.get_file_info(self.path).type == pafs.FileType.NotFound \
                else {}
        try:
            return json.loads(data)
        except ValueError:
            return {}

    # ---- taking and giving back ------------------------------------------------------

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        for _ in range(5):
            if self._create(self._record()):
                self.started = json.loads(self._record())["started_at"]
                self._beat = threading.Thread(target=self._heartbeat, daemon=True,
                                              name="raypipe-lock-heartbeat")
                self._beat.start()
                return
            holder = self.holder()
            if holder is None:
                continue                                  # released meanwhile: try again
            if holder and not stale(holder):
                raise OutputLocked(
                    f"{self.uri}: the output is being written by `raypipe {holder['purpose']}` "
                    f"(pid {holder['pid']} on {holder['host']}, since {holder['started_at']}); "
                    f"wait for it to finish. A lock whose process is gone is taken over "
                    f"(same host: at once; another host: after {STALE_AFTER_S} s without "
                    f"its heartbeat).")
            if not holder:
                time.sleep(0.2)                           # half-written: look again
                holder = self.holder()
                if holder and not stale(holder):
                    continue
            log.warning("%s: taking over a stale lock (%s)", self.uri,
                        {k: holder.get(k) for k in ("purpose", "pid", "host", "started_at")}
                        if holder else "unreadable")
            self._break()
        raise OutputLocked(f"{self.uri}: could not take the lock")

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None
        holder = self.holder()
        if holder and holder.get("token") == self.token:
            self.fs.delete_file(self.path)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            holder = self.holder()
            if holder and holder.get("token") != self.token:
                log.error("%s: the lock was taken over by %s", self.uri, holder.get("pid"))
                return
            self._write(self._record(self.started))

    # ---- the filesystem's exclusive create -------------------------------------------

    def _create(self, data: bytes) -> bool:
        if isinstance(self.fs, pafs.LocalFileSystem):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return True
        if self.uri.startswith("s3://") and _has_boto3():
            return _s3_create(self.path, data)
        if self.holder() is not None:                     # best effort (see module doc)
            return False
        self._write(data)
        return (self.holder() or {}).get("token") == self.token

    def _write(self, data: bytes) -> None:
        if isinstance(self.fs, pafs.LocalFileSystem):
            tmp = f"{self.path}.tmp-{self.token[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
            return
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def _break(self) -> None:
        if isinstance(self.fs, pafs.LocalFileSystem):
            aside = f"{self.path}.stale-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(self.path, aside)               # one of several breakers wins
            except FileNotFoundError:
                return
            os.remove(aside)
            return
        try:
            self.fs.delete_file(self.path)
        except (FileNotFoundError, OSError):
            pass


def stale(holder: dict) -> bool:
    """Whether a lock's holder is gone: its process (on this host), or its heartbeat."""
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, KeyError):
            pass
        else:
            return False
    return time.time() - float(holder.get("heartbeat", 0)) > STALE_AFTER_S


def _has_boto3() -> bool:
    import importlib.util
    if importlib.util.find_spec("boto3") is None:
        log.warning("boto3 is not installed: the S3 output lock is best effort")
        return False
    return True


def _s3_create(path: str, data: bytes) -> bool:
    """S3's atomic create: PUT with If-None-Match: * (412 when the key exists)."""
    import boto3
    from botocore.exceptions import ClientError
    bucket, key = path.split("/", 1)
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("PreconditionFailed",
                                                        "ConditionalRequestConflict") \
                or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
            return False
        raise
    return True
