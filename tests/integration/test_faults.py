"""Workers dying mid-stage: an embedding actor's process and a K-means task's process are
killed with SIGKILL, and the stage's output is the one an undisturbed run gives."""
import os
import signal

import numpy as np
import pyarrow as pa
import pytest
import ray

from raypipe.config import EmbedConfig
from raypipe.jobs.embedding import blocks_by_length, embed_texts
from raypipe.jobs.kmeans_tasks import RayShards
from raypipe.segments.kmeans import KMeans

pytestmark = pytest.mark.slow


def texts(n: int) -> pa.Table:
    words = ["serum", "lipstick", "shampoo", "toner", "mascara", "cleanser", "balm", "oil"]
    return pa.table({"item_id": [f"i{i:04d}" for i in range(n)],
                     "text": [" ".join(words[(i * j) % 8] for j in range(1, 2 + i % 9))
                              for i in range(n)]})


def embed(table: pa.Table, kill_after: int | None = None) -> tuple[np.ndarray, list]:
    """Embed with two one-thread actors; after `kill_after` output blocks, SIGKILL one
    actor's process. -> (vectors in item order, pids killed)."""
    from ray.util.state import list_actors
    cfg = EmbedConfig(batch_size=8, cpus_per_actor=1, max_actors=2)
    ds, _ = embed_texts(ray.data.from_arrow(blocks_by_length(table, "text", 32)), "text", cfg)
    parts, killed = [], []
    for i, batch in enumerate(ds.iter_batches(batch_size=None, batch_format="pyarrow")):
        parts.append(batch)
        if i + 1 == kill_after:
            workers = [a for a in list_actors(filters=[("state", "=", "ALIVE")])
                       if "MapWorker" in a.class_name and a.pid]
            assert workers, "no embedding actor found to kill"
            os.kill(workers[0].pid, signal.SIGKILL)
            killed.append(workers[0].pid)
    out = pa.concat_tables(parts).sort_by("item_id")
    assert out["item_id"].equals(table["item_id"]), "rows lost or duplicated"
    return np.stack(out["vector"].to_numpy(zero_copy_only=False)), killed


def test_an_embedding_actor_killed_mid_stage_gives_the_same_vectors(ray_session):
    table = texts(320)
    undisturbed, _ = embed(table)
    disturbed, killed = embed(table, kill_after=2)
    assert killed
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)                    # that process really is gone
    np.testing.assert_array_equal(disturbed, undisturbed)


def kill_once(fn, flag: str):
    """Wraps a shard function: the first task to run it (across processes, decided by an
    exclusive file create) SIGKILLs its own worker process mid-task. A closure, so Ray's
    pickling ships it by value to workers that cannot import this test module."""
    def run(*args):
        try:
            os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return fn(*args)
        os.kill(os.getpid(), signal.SIGKILL)
    return run


class KillingShards(RayShards):
    """RayShards whose third Lloyd step has one of its tasks killed."""

    def __init__(self, shards: RayShards, flag: str):
        super().__init__(shards.refs, shards.sizes, shards.dim)
        self.flag, self.scans = flag, 0

    def scan(self, fn, states, *args):
        self.scans += 1
        return super().scan(kill_once(fn, self.flag) if self.scans == 3 else fn, states, *args)


def test_a_kmeans_task_killed_mid_fit_gives_the_same_segments(ray_session, tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3000, 16)) + 4 * rng.standard_normal((6, 16))[
        rng.integers(0, 6, 3000)]).astype(np.float32)
    shards = RayShards.from_arrays(np.array_split(x, 6))

    def fit(s):
        return KMeans(6, init="k-means||", max_iter=20, tol=0.0, random_state=0).fit(s)

    undisturbed = fit(shards)
    flag = str(tmp_path / "killed")
    killing = KillingShards(shards, flag)
    disturbed = fit(killing)
    assert os.path.exists(flag) and killing.scans >= 3, "no task was killed"
    np.testing.assert_array_equal(disturbed.cluster_centers_, undisturbed.cluster_centers_)
    np.testing.assert_array_equal(disturbed.labels_, undisturbed.labels_)
    assert disturbed.inertia_ == undisturbed.inertia_
