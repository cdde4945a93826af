import hashlib
import os

import numpy as np
import pytest

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session: starting Ray per test costs seconds."""
    import ray
    from raypipe.jobs import runtime
    runtime.start(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def shared_data():
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return os.path.abspath(SHARED_DATA)


def fake_vectors(texts, dim=16):
    """Texts -> deterministic unit vectors (a hash), for tests that need no real model."""
    out = np.zeros((len(texts), dim), np.float32)
    for i, t in enumerate(texts):
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
        out[i] = np.random.default_rng(seed).standard_normal(dim)
    return out / np.linalg.norm(out, axis=1, keepdims=True)
