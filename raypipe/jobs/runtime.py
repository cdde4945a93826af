"""Starting or joining Ray, and what the cluster offers."""
from __future__ import annotations

import logging
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import ray

log = logging.getLogger(__name__)
_CACHE: dict = {}


def verbose() -> bool:
    """The console shows raypipe's own lines and everyone's warnings; Ray Data's and Ray
    Train's INFO lines go to their log files in the Ray session's logs, unless
    RAYPIPE_VERBOSE=1 (`raypipe run --verbose`)."""
    return os.environ.get("RAYPIPE_VERBOSE", "") not in ("", "0")
# Users per batch in the per-user maps (pooling, profiles, recommendations, encoder vectors):
# a task's memory follows its batch, not the size of the block it reads.
USER_BATCH = 4096


def start(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` ('auto' for the one this node belongs to), else start a
    local Ray with `num_cpus` CPUs (default: all)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # The dashboard (on 127.0.0.1) serves the state API that Ray Train and Serve query.
        # Its address goes to every process of this Ray, which inherit this environment:
        # with another Ray on the same host, Ray Train's placement-group cleaner would
        # otherwise not know which to ask, and fails with a traceback in the console. (An
        # env var, not a job runtime_env: that would start every worker through Ray's
        # runtime-env set-up.)
        # Set even where it was set: an inherited value names another Ray (a parent
        # process's), never the one starting here.
        port = _free_port()
        os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_port=port,
                 log_to_driver=True)
    quiet_ray_data(verbose())
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = sys.stderr.isatty()
    ctx.print_on_execution_start = False
    # Blocks come out in input order, so a re-run, a reused stage, or a run in which an actor
    # or task was retried gives the same K-means shards and the same outputs.
    ctx.execution_options.preserve_order = True
    log.info("ray: %s CPUs, %s GPUs", *resources())


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quiet_ray_data(verbose: bool) -> None:
    """Ray Data's console handler at WARNING (its file handler keeps everything); its
    once-per-process warnings that progress bars are off (they are off on purpose where
    stderr is not a terminal) and that no CPU is free (see below) are spent in advance."""
    from ray.data._internal.logging import configure_logging
    from ray.util.debug import log_once
    configure_logging()          # Ray Data's own set-up, done now so it is not redone later
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ != "SessionFileHandler":
            handler.setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        log_once("ray_data_progress_manager_disabled")
        # "no available CPUs, the Dataset job will hang": Ray Data reads the cluster's
        # resource view as an execution starts, which lags by up to a second behind tasks
        # that just finished (jobs/shuffle.py's, right before a write); it then never hangs
        log_once("cpu_warning")


def resources() -> tuple[int, int]:
    """(CPUs, GPUs) of the whole cluster."""
    res = ray.cluster_resources()
    return int(res.get("CPU", 0)), int(res.get("GPU", 0))


def shuffle_partitions() -> int:
    """Partitions for a group-by: two per CPU of the cluster. Ray Data's default (200)
    starts that many reduce tasks whatever the data's size, seconds on a small log."""
    return max(2, 2 * resources()[0])


def fetch(ref):
    """ray.get with a per-process cache, for read-only objects many batches share
    (item vectors, centroids): one copy per worker process, not one per batch."""
    key = ref.hex()
    if key not in _CACHE:
        if len(_CACHE) > 16:
            _CACHE.clear()
        _CACHE[key] = ray.get(ref)
    return _CACHE[key]


def cached(key: str, build):
    """Per-process cache of objects built from fetched ones (a faiss index, say)."""
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def unwrap(exc: BaseException, kind: type) -> BaseException | None:
    """Find an exception of `kind` raised inside a Ray task, through Ray's wrappers. Ray Data
    keeps only the text of a user error, so the last resort is its 'module.Kind: message'."""
    seen, cur = set(), exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, kind):
            return cur
        cur = getattr(cur, "cause", None) or cur.__cause__ or cur.__context__
    name = f"{kind.__module__}.{kind.__qualname__}: "
    for line in str(exc).splitlines():
        if line.startswith(name):
            return kind(line[len(name):])
    return None


@ray.remote
def _smallest(block: pa.Table, column: str):
    return pc.min(block[column]).as_py() if block.num_rows else None


def sorted_blocks(ds, column: str):
    """A materialized dataset whose blocks are in the order of their smallest `column`
    value, empty ones dropped. A hash shuffle's blocks come out in whatever order its tasks
    finish; this makes the order (and so what every later stage reads) the same each run."""
    refs = ds.to_arrow_refs()
    keys = ray.get([_smallest.remote(r, column) for r in refs])
    order = sorted((k, i) for i, k in enumerate(keys) if k is not None)
    return ray.data.from_arrow_refs([refs[i] for _, i in order] or refs[:1])


# Tables of up to this many files are read by Ray Data's first Parquet reader. Its second
# (the default in Ray 2.60) starts and kills 32 footer-reading actors on every read, which
# suits thousands of files in object storage but costs 2-3 s per read on 2 cores against
# 0.4 s (a stage folder holds one file per written block).
FEW_FILES = 256


def read_dataset(folder, name: str):
    """A stage folder's table as a Ray dataset (run/artifacts.Folder stays free of Ray)."""
    table = f"{name}.parquet"
    ctx = ray.data.DataContext.get_current()
    before = ctx.use_datasource_v2
    ctx.use_datasource_v2 = before and len(folder.files(table)) > FEW_FILES
    try:
        return ray.data.read_parquet(folder.child(table))
    finally:
        ctx.use_datasource_v2 = before


def to_table(ds) -> pa.Table:
    """A (small) dataset -> one Arrow table on the driver."""
    tables = ray.get(ds.to_arrow_refs())
    tables = [t for t in tables if t.num_rows] or tables[:1]
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def collect(ds, total: int, label: str, every_s: float = 15.0) -> pa.Table | None:
    """Stream a dataset's rows to the driver, logging progress at most every `every_s`
    seconds (job logs have no progress bars)."""
    import time
    parts, done, logged = [], 0, -1
    start = last = time.monotonic()
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        parts.append(batch)
        done += batch.num_rows
        now = time.monotonic()
        if now - last >= every_s:
            rate = done / max(now - start, 1e-9)
            log.info("%s: %d/%d (%.0f%%), %.0f/s, ~%.0f s left", label, done, total,
                     100.0 * done / max(total, 1), rate, max(total - done, 0) / max(rate, 1e-9))
            last, logged = now, done
    if logged != done:
        log.info("%s: %d/%d in %.1f s", label, done, total, time.monotonic() - start)
    return pa.concat_tables(parts) if parts else None
