"""vectors/embed.py and jobs/embedding.py: the shipped MiniLM's vectors, precisions against
the cosine bar, the device chosen at run time, the Ray Data actor pool equal to the plain
Embedder, fp16 on a GPU (skipped without one)."""
import numpy as np
import pyarrow as pa
import pytest

from raypipe.config import EmbedConfig
from raypipe.vectors.embed import Embedder, pick_device

pytestmark = pytest.mark.slow
TEXTS = ["waterproof ultralight tent", "stainless steel chef knife", "", "a " * 200,
         "Nail Polish, Red", "trail tent for hiking"]


@pytest.fixture(scope="module")
def embedder():
    return Embedder(precision="fp32", max_length=32, batch_size=2)


def test_unit_vectors_in_input_order_whatever_the_batching(embedder):
    together = embedder.encode(TEXTS)
    alone = np.concatenate([embedder.encode([t]) for t in TEXTS])
    assert together.shape == (len(TEXTS), embedder.dim) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_similar_texts_are_closer(embedder):
    v = embedder.encode(TEXTS)
    assert v[0] @ v[5] > v[0] @ v[1]


@pytest.mark.parametrize("precision", ["bf16", "auto"])
def test_every_cpu_precision_auto_may_pick_stays_within_the_cosine_bar(embedder, precision):
    texts = [t for t in TEXTS if t.strip()] + ["Maybelline Color Sensational Lipstick, Red",
                                               "Neutrogena Hydro Boost Water Gel, 1.7 Ounce"]
    other = Embedder(precision=precision, max_length=32, batch_size=2)
    cos = (other.encode(texts) * embedder.encode(texts)).sum(1)
    assert cos.min() >= 0.99, (other.precision, cos)


def test_precisions_a_device_cannot_run_are_refused():
    from raypipe.vectors.embed import pick_precision
    with pytest.raises(ValueError, match="not available on cpu"):
        pick_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="not available on cuda"):
        pick_precision("int8", "cuda")
    with pytest.raises(ValueError, match="expected one of"):
        pick_precision("fp8", "cpu")
    assert pick_precision("auto", "cuda") == "fp16"
    assert pick_precision("auto", "cpu") in ("bf16", "fp32")


TITLES = ["Maybelline Color Sensational Lipstick, Red", "Neutrogena Hydro Boost Water Gel",
          "OPI Nail Lacquer, Big Apple Red", "CeraVe Hydrating Facial Cleanser 16 oz",
          "Revlon One-Step Hair Dryer And Volumizer", "Olaplex No. 3 Hair Perfector",
          "Coleman Sundome 4-Person Tent", "Lodge Cast Iron Skillet, 12 inch",
          "Anker USB-C Charger 65W", "Burt's Bees Beeswax Lip Balm, 4 Tubes"] * 3


def test_int8_calibrated_on_the_texts_stays_within_the_bar(embedder):
    from raypipe.vectors.embed import calibrate
    from raypipe.vectors.quantize import Calibration
    cal = calibrate(TITLES, max_length=32)
    assert cal.texts == len(TITLES) and len(cal.absmax) >= 36   # 6 layers x 6 Linear
    # Each layer's query, key and value read one tensor: found, and given one scale.
    assert sorted(sorted(n.rsplit(".", 1)[1] for n in g) for g in cal.groups) == \
        [["key", "query", "value"]] * 6
    int8 = Embedder(precision="int8", max_length=32, calibration=cal)
    cos = (int8.encode(TITLES) * embedder.encode(TITLES)).sum(1)
    held_out = (int8.encode(TITLES[2::3]) * embedder.encode(TITLES[2::3])).sum(1)
    assert held_out.mean() == pytest.approx(cal.cosine_mean, abs=1e-4)
    assert cos.mean() >= 0.99, cos
    # Without the SmoothQuant scales (plain dynamic int8) it is further from fp32.
    plain = Embedder(precision="int8", max_length=32,
                     calibration=Calibration.smooth_all(cal.absmax, alpha=None))
    assert (plain.encode(TITLES) * embedder.encode(TITLES)).sum(1).mean() < cos.mean()
    with pytest.raises(ValueError, match="needs a calibration"):
        Embedder(precision="int8")


def test_auto_takes_int8_only_when_the_sample_reaches_the_bar(monkeypatch):
    from raypipe.vectors import embed, quantize
    monkeypatch.setattr(embed, "cpu_has_bf16", lambda: False)
    sampled = []
    sample = lambda: sampled.append(1) or TITLES      # noqa: E731
    precision, cal = embed.choose_precision("auto", "cpu", sample, max_length=32)
    assert (precision, sampled) == ("int8", [1]) and cal.cosine_mean >= 0.99
    monkeypatch.setattr(quantize, "COSINE_BAR", 0.99999)
    assert embed.choose_precision("auto", "cpu", sample, max_length=32)[0] == "fp32"
    assert embed.choose_precision("fp32", "cpu", sample) == ("fp32", None)
    assert embed.choose_precision("auto", "cuda", sample) == ("fp16", None)
    # too few texts for int8 to repay its calibration: not sampled, fp32
    assert embed.choose_precision("auto", "cpu", sample, pays_off=False) == ("fp32", None)
    assert len(sampled) == 2                    # only when int8 was in question


def test_device_is_chosen_at_run_time():
    import torch
    assert pick_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu"


def test_ray_data_actor_pool_equals_plain_embedder(ray_session, embedder):
    import ray

    from raypipe.jobs.embedding import embed_texts
    ds = ray.data.from_arrow(pa.table({"key": list(range(len(TEXTS))), "text": TEXTS}))
    cfg = EmbedConfig(precision="fp32", batch_size=2, max_length=32)
    out, info = embed_texts(ds, "text", cfg)
    out = out.take_all()
    assert info == {"precision": "fp32", "texts": len(TEXTS), "calibration": None}
    # auto on a CPU: int8 is not tried for a handful of texts (too few to repay calibrating)
    _, auto = embed_texts(ds, "text", EmbedConfig(precision="auto", batch_size=2,
                                                  max_length=32))
    if auto["precision"] in ("fp32", "int8"):        # no native bf16 here
        assert auto["precision"] == "fp32" and auto["calibration"] is None
        assert "int8 not tried" in auto["note"]
    got = np.stack([r["vector"] for r in sorted(out, key=lambda r: r["key"])])
    np.testing.assert_allclose(got, embedder.encode(TEXTS), atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs CUDA")
def test_fp16_on_gpu_close_to_fp32_on_cpu(embedder):
    gpu = Embedder(max_length=32, device="cuda", precision="fp16").encode(TEXTS)
    cos = (gpu * embedder.encode(TEXTS)).sum(1)
    assert cos.min() > 0.99
