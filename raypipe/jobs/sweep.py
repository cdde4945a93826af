"""The segment sweep (segments/sweep.py) on Ray: the sample goes to the object store once and
each (K, resample) fit is one single-CPU task, so the trials spread over the cluster."""
from __future__ import annotations

import numpy as np
import ray

from raypipe.segments.sweep import SweepConfig, sweep


@ray.remote(num_cpus=1, max_retries=3)
def _trial(fn, x, *job):
    return fn(x, *job)


def ray_map(fn, x: np.ndarray, jobs: list) -> list:
    """fn(x, *job) for every job, as Ray tasks (largest K first: the longest trials start
    first, so the last task to finish is a short one)."""
    ref = ray.put(x)
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][0])
    futures = {i: _trial.remote(fn, ref, *jobs[i]) for i in order}
    return [ray.get(futures[i]) for i in range(len(jobs))]


def sweep_on_ray(x: np.ndarray, cfg: SweepConfig) -> dict:
    return sweep(x, cfg, ray_map)
