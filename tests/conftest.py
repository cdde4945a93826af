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


@pytest.fixture(scope="session")
def pipeline_runs(ray_session, tmp_path_factory):
    """user_repr -> (artifacts folder, manifest, synthetic paths): one small run each, made
    on first use and shared by the pipeline, online and serving tests."""
    from raypipe.config import PipelineConfig, SourceConfig, SyntheticConfig, apply_overrides
    from raypipe.pipeline import run
    from raypipe.events.synthetic import generate
    runs = {}

    def get(user_repr: str):
        if user_repr not in runs:
            root = tmp_path_factory.mktemp(f"pipeline-{user_repr}")
            paths = generate(SyntheticConfig(users=600, items=300, events=15000, segments=4,
                                             seed=1), str(root / "data"))
            cfg = PipelineConfig(output=str(root / "out"),
                                 source=SourceConfig(kind="events", input=paths["events"],
                                                     items=paths["items"]))
            cfg = apply_overrides(cfg, ["kmeans.n_clusters=4", "eval.holdout=last",
                                        "recommend.strategies=[vector,segment,blend,multi]",
                                        "recommend.k=10", f"user_repr={user_repr}"])
            runs[user_repr] = (cfg.output, run(cfg), paths)
        return runs[user_repr]
    return get
