import numpy as np
import pyarrow as pa
import pytest

from raypipe.config import EmbedConfig
from raypipe.embed import Embedder, pick_device

pytestmark = pytest.mark.slow
TEXTS = ["waterproof ultralight tent", "stainless steel chef knife", "", "a " * 200,
         "Nail Polish, Red", "trail tent for hiking"]


@pytest.fixture(scope="module")
def embedder():
    return Embedder(max_length=32, batch_size=2)


def test_unit_vectors_in_input_order_whatever_the_batching(embedder):
    together = embedder.encode(TEXTS)
    alone = np.concatenate([embedder.encode([t]) for t in TEXTS])
    assert together.shape == (len(TEXTS), embedder.dim) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_similar_texts_are_closer(embedder):
    v = embedder.encode(TEXTS)
    assert v[0] @ v[5] > v[0] @ v[1]


def test_device_is_chosen_at_run_time():
    import torch
    assert pick_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu"


def test_ray_data_actor_pool_equals_plain_embedder(ray_session, embedder):
    import ray

    from raypipe.jobs.embedding import embed_texts
    ds = ray.data.from_arrow(pa.table({"key": list(range(len(TEXTS))), "text": TEXTS}))
    out = embed_texts(ds, "text", EmbedConfig(batch_size=2, max_length=32)).take_all()
    got = np.stack([r["vector"] for r in sorted(out, key=lambda r: r["key"])])
    np.testing.assert_allclose(got, embedder.encode(TEXTS), atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs CUDA")
def test_fp16_on_gpu_close_to_fp32_on_cpu(embedder):
    gpu = Embedder(max_length=32, device="cuda").encode(TEXTS)
    cos = (gpu * embedder.encode(TEXTS)).sum(1)
    assert cos.min() > 0.99
