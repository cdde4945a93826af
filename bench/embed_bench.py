"""Embedding throughput: `Embedder.encode` at each CPU precision beside sentence-transformers'
`encode` (same model, same texts, same process), the Ray Data stage in steady state, and
long sequence texts (`user_repr: text`).

  .venv/bin/pip install sentence-transformers     # the baseline; not a raypipe dependency
  .venv/bin/python bench/embed_bench.py [--texts 4000]

Texts: the first --texts item titles of amazon-beauty (../shared/data). Each path warms up
on 256 of them, then encodes them all --repeats times; the best time counts (bf16 once: on
CPUs without native bf16 it is emulated and slow). Cosine: per text,
between a precision's vector and fp32's. Prints one JSON line: texts/s per path, ratios to
sentence-transformers, cosines, the Ray Data stage's start-up and steady-state rate and its
ratio to `Embedder.encode` in one process (same run), and which precision `auto` picked.
The stage's steady state comes from running it on half the texts and on all of them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "shared", "data")


def item_texts(n: int) -> list[str]:
    from raypipe.events import readers, sources
    from raypipe.config import SourceConfig
    cfg = SourceConfig(kind="amazon-p5", input=os.path.join(DATA, "amazon-beauty"))
    table = readers.read_items(sources.plan_items(cfg)[0], {}, cfg.text_columns)
    texts = [t for t in table["text"].to_pylist() if t]
    return texts[:n]


def sequence_texts(texts: list[str], n: int, length: int = 20) -> list[str]:
    """Rendered behaviour sequences as `user_repr: text` makes them (sequence_text)."""
    from raypipe.events.sequences import sequence_text
    rng = np.random.default_rng(0)
    return [sequence_text([texts[i] for i in rng.integers(0, len(texts), length)],
                          ["view"] * length) for _ in range(n)]


def rate(encode, texts, repeats: int) -> tuple[float, np.ndarray]:
    """-> (texts/s, best of `repeats` timed passes after a short warm-up, the vectors)."""
    encode(texts[:256])
    best, vectors = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = encode(texts)
        best = min(best, time.perf_counter() - start)
    return round(len(texts) / best, 1), np.asarray(vectors, np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> dict:
    c = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1),
                                    1e-12)
    return {"mean": round(float(c.mean()), 5), "min": round(float(c.min()), 5)}


def ray_stage(texts: list[str], cfg, reference_rate: float) -> dict:
    """The pipeline's Ray Data stage on the same texts, run on the first half and on all of
    them: the difference is steady-state work (start-up, materializing, the actor's start
    and model load cancel out), the rest of the half run is start-up."""
    import ray

    from raypipe.jobs import runtime
    runtime.start(num_cpus=os.cpu_count())
    half = len(texts) // 2
    t_half, t_all = _stage_seconds(texts[:half], cfg), _stage_seconds(texts, cfg)
    ray.shutdown()
    steady = (len(texts) - half) / max(t_all - t_half, 1e-9)
    return {"seconds_half": round(t_half, 2), "seconds_all": round(t_all, 2),
            "startup_s": round(t_half - half / steady, 2),
            "steady_texts_per_s": round(steady, 1),
            "ratio_to_encode": round(steady / reference_rate, 3)}


def _stage_seconds(texts: list[str], cfg) -> float:
    import pyarrow as pa
    import ray

    from raypipe.jobs.embedding import blocks_by_length, embed_texts
    table = pa.table({"i": range(len(texts)), "text": texts})
    start = time.perf_counter()
    ds = ray.data.from_arrow(blocks_by_length(table, "text", cfg.batch_size * 4))
    rows = sum(b.num_rows for b in embed_texts(ds, "text", cfg).iter_batches(
        batch_size=None, batch_format="pyarrow"))
    assert rows == len(texts), (rows, len(texts))
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texts", type=int, default=4000)
    p.add_argument("--sequences", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--only-ray", action="store_true", help="just the Ray Data stage")
    args = p.parse_args()
    import torch

    from raypipe.config import EmbedConfig
    from raypipe.vectors.embed import Embedder, cpu_has_bf16, default_model_path
    torch.set_num_threads(os.cpu_count())
    texts = item_texts(args.texts)
    if args.only_ray:
        e = Embedder(batch_size=args.batch_size)
        reference, _ = rate(e.encode, texts, args.repeats)
        stage = ray_stage(texts, EmbedConfig(batch_size=args.batch_size), reference)
        print(json.dumps({"bench": "embed-ray", "texts": len(texts), "precision": e.precision,
                          "encode_texts_per_s": reference, "ray_data": stage}))
        return
    out = {"bench": "embed", "texts": len(texts), "cpus": os.cpu_count(),
           "native_bf16": cpu_has_bf16(),
           "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
           "torch_threads": torch.get_num_threads(), "texts_per_s": {}, "cosine_to_fp32": {}}
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        sys.exit("the baseline needs sentence-transformers: .venv/bin/pip install "
                 "sentence-transformers")
    st = SentenceTransformer(default_model_path(), device="cpu")
    st.max_seq_length = 64
    out["texts_per_s"]["sentence_transformers"], _ = rate(
        lambda t: st.encode(t, batch_size=args.batch_size, normalize_embeddings=True),
        texts, args.repeats)
    vectors = {}
    for precision in ("fp32", "bf16", "int8"):
        e = Embedder(precision=precision, batch_size=args.batch_size)
        repeats = 1 if precision == "bf16" and not cpu_has_bf16() else args.repeats
        out["texts_per_s"][precision], vectors[precision] = rate(e.encode, texts, repeats)
        out["cosine_to_fp32"][precision] = cosine(vectors[precision], vectors["fp32"])
    auto = Embedder().precision
    out["auto"] = auto
    base = out["texts_per_s"]["sentence_transformers"]
    out["ratio_to_sentence_transformers"] = {k: round(v / base, 3) for k, v in
                                             out["texts_per_s"].items()}
    seqs = sequence_texts(texts, args.sequences)
    out["sequence_mean_chars"] = round(float(np.mean([len(s) for s in seqs])), 1)
    out["sequence_texts_per_s"] = {}
    for precision in ("fp32", auto):
        e = Embedder(precision=precision, max_length=256, batch_size=32)
        out["sequence_texts_per_s"][precision], _ = rate(e.encode, seqs, 1)
    if not args.skip_ray:
        cfg = EmbedConfig(precision=auto, batch_size=args.batch_size)
        out["ray_data"] = ray_stage(texts, cfg, out["texts_per_s"][auto])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
