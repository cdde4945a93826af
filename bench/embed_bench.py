"""Embedding throughput: `Embedder.encode` at each CPU precision beside sentence-transformers'
`encode` (same model, same texts, same process), on amazon-beauty's short titles and
amazon-scientific's longer texts; the Ray Data stage in steady state; and long sequence
texts (`user_repr: text`). int8 is calibrated (SmoothQuant) on embed.calibration_texts
texts drawn at random from those measured, as the pipeline draws them from the catalogue it
embeds; `int8_plain` is dynamic int8 without the scales.

  .venv/bin/pip install sentence-transformers     # the baseline; not a raypipe dependency
  .venv/bin/python bench/embed_bench.py [--texts 4000]

Texts: the first --texts item texts of each dataset (../shared/data). Each path warms up
on 256 of them, then encodes them all --repeats times; the best time counts (bf16 only
with native bf16 instructions or --bf16, then once: emulated, it is slow). Cosine: per text,
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


DATASETS = {"amazon-beauty": "amazon-p5", "amazon-scientific": "recbole"}


def item_texts(n: int, dataset: str = "amazon-beauty") -> list[str]:
    """The first `n` item texts of a dataset under ../shared/data."""
    from raypipe.events import readers, sources
    from raypipe.config import SourceConfig
    cfg = SourceConfig(kind=DATASETS[dataset], input=os.path.join(DATA, dataset))
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
    rows = sum(b.num_rows for b in embed_texts(ds, "text", cfg)[0].iter_batches(
        batch_size=None, batch_format="pyarrow"))
    assert rows == len(texts), (rows, len(texts))
    return time.perf_counter() - start


def precisions(texts: list[str], st, args) -> dict:
    """One dataset's texts: sentence-transformers, fp32, bf16, int8 calibrated on a random
    sample of the texts (SmoothQuant) and plain dynamic int8; texts/s, cosines to fp32,
    ratios to sentence-transformers, and what `auto` takes."""
    from raypipe.config import EmbedConfig
    from raypipe.vectors.embed import Embedder, calibrate, choose_precision, cpu_has_bf16
    from raypipe.vectors.quantize import Calibration
    rng = np.random.default_rng(0)
    n = min(EmbedConfig().calibration_texts, len(texts))
    sample = [texts[i] for i in rng.choice(len(texts), n, replace=False)]
    out = {"texts": len(texts), "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
           "texts_per_s": {}, "cosine_to_fp32": {}}
    out["texts_per_s"]["sentence_transformers"], _ = rate(
        lambda t: st.encode(t, batch_size=args.batch_size, normalize_embeddings=True),
        texts, args.repeats)
    start = time.perf_counter()
    cal = calibrate(sample, batch_size=args.batch_size)
    out["calibration"] = {**cal.summary(), "seconds": round(time.perf_counter() - start, 2)}
    paths = {"fp32": {"precision": "fp32"}, **({"bf16": {"precision": "bf16"}} if cpu_has_bf16()
                                                 or args.bf16 else {}),
             "int8": {"precision": "int8", "calibration": cal},
             "int8_plain": {"precision": "int8",
                            "calibration": Calibration.smooth_all(cal.absmax, alpha=None)}}
    vectors = {}
    for name, kw in paths.items():
        e = Embedder(batch_size=args.batch_size, **kw)
        repeats = 1 if name == "bf16" and not cpu_has_bf16() else args.repeats
        out["texts_per_s"][name], vectors[name] = rate(e.encode, texts, repeats)
        out["cosine_to_fp32"][name] = cosine(vectors[name], vectors["fp32"])
    out["auto"] = choose_precision("auto", "cpu", lambda: sample,
                                   batch_size=args.batch_size)[0]
    base = out["texts_per_s"]["sentence_transformers"]
    out["ratio_to_sentence_transformers"] = {k: round(v / base, 3) for k, v in
                                             out["texts_per_s"].items()}
    within = [k for k in paths if out["cosine_to_fp32"][k]["mean"] >= 0.99]
    best = max(within, key=lambda k: out["texts_per_s"][k])
    out["best_within_bar"] = {"path": best,
                              "ratio_to_sentence_transformers":
                                  out["ratio_to_sentence_transformers"][best], "goal": 1.6}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texts", type=int, default=4000)
    p.add_argument("--sequences", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--bf16", action="store_true",
                   help="also bf16 where the CPU emulates it (slow; skipped by default)")
    p.add_argument("--only-ray", action="store_true", help="just the Ray Data stage")
    args = p.parse_args()
    import torch

    from raypipe.config import EmbedConfig
    from raypipe.vectors.embed import Embedder, calibrate, cpu_has_bf16, default_model_path
    torch.set_num_threads(os.cpu_count())
    if args.only_ray:
        texts = item_texts(args.texts)
        e = Embedder(batch_size=args.batch_size)
        reference, _ = rate(e.encode, texts, args.repeats)
        stage = ray_stage(texts, EmbedConfig(batch_size=args.batch_size), reference)
        print(json.dumps({"bench": "embed-ray", "texts": len(texts), "precision": e.precision,
                          "encode_texts_per_s": reference, "ray_data": stage}))
        return
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        sys.exit("the baseline needs sentence-transformers: .venv/bin/pip install "
                 "sentence-transformers")
    st = SentenceTransformer(default_model_path(), device="cpu")
    st.max_seq_length = 64
    out = {"bench": "embed", "cpus": os.cpu_count(), "native_bf16": cpu_has_bf16(),
           "torch_threads": torch.get_num_threads(), "datasets": {}}
    for dataset in args.datasets:
        out["datasets"][dataset] = precisions(item_texts(args.texts, dataset), st, args)
        print(json.dumps({"dataset": dataset, **out["datasets"][dataset]}), file=sys.stderr)
    texts = item_texts(args.texts)
    seqs = sequence_texts(texts, args.sequences)
    out["sequence_mean_chars"] = round(float(np.mean([len(s) for s in seqs])), 1)
    out["sequence_texts_per_s"] = {}
    cal = calibrate(seqs, max_length=256, batch_size=32)
    out["sequence_calibration"] = cal.summary()
    for precision in ("fp32", "int8"):
        e = Embedder(precision=precision, max_length=256, batch_size=32, calibration=cal)
        out["sequence_texts_per_s"][precision], _ = rate(e.encode, seqs, 1)
    if not args.skip_ray:
        cfg = EmbedConfig(batch_size=args.batch_size)
        out["ray_data"] = ray_stage(texts, cfg, out["datasets"]["amazon-beauty"]["texts_per_s"][
            out["datasets"]["amazon-beauty"]["auto"]])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
