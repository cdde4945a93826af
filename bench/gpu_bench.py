"""The GPU paths, on a machine with CUDA: text embedding (fp32 and fp16, beside
sentence-transformers on the same GPU), K-means (raypipe's `KMeans.fit`, which assigns on
the GPU when one is visible, beside a plain Lloyd written in torch with the data resident
on the GPU, and beside raypipe on the same machine's CPU cores), and the sequence encoder's
epoch time (training.fit on the GPU beside the same on the CPU cores).

    python bench/gpu_bench.py [--texts TEXTS.json] [--parts embed,kmeans,encoder]

TEXTS.json: {"dataset name": [item texts]}; without it the first --n-texts item texts of
amazon-beauty and amazon-scientific are read from ../shared/data (bench/embed_bench.py).
The encoder's data are synthetic histories with amazon-beauty's shape (22,363 users,
12,101 items, lengths drawn to a mean of about 9 and at most 50 events, random text
vectors): an epoch's time hangs on the shapes, not on the items in them.
Prints one JSON line per part (each part's failure is printed, not raised).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _sync():
    import torch
    torch.cuda.synchronize()


def _timed(fn, repeats: int = 1):
    """-> (best seconds of `repeats` calls, the last call's result); CUDA synchronized."""
    best, out = float("inf"), None
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        out = fn()
        _sync()
        best = min(best, time.perf_counter() - start)
    return best, out


def embed_part(texts: dict, repeats: int) -> dict:
    from sentence_transformers import SentenceTransformer

    from embed_bench import cosine
    from raypipe.vectors.embed import Embedder, choose_precision, default_model_path
    out = {"part": "embed", "auto": choose_precision("auto", "cuda", lambda: [])[0]}
    for name, ts in texts.items():
        row, vec = {"texts": len(ts), "texts_per_s": {}}, {}
        st = SentenceTransformer(default_model_path(), device="cuda")
        for label, model in (("st_fp32", st), ("st_fp16", st.half())):
            model.encode(ts[:256], batch_size=128)
            sec, v = _timed(lambda: model.encode(ts, batch_size=128, normalize_embeddings=True,
                                                 convert_to_numpy=True), repeats)
            row["texts_per_s"][label], vec[label] = round(len(ts) / sec, 1), np.asarray(v,
                                                                                        np.float32)
        del st
        for precision in ("fp32", "fp16"):
            for batch in (128, 512):
                e = Embedder(device="cuda", precision=precision, batch_size=batch)
                e.encode(ts[:256])
                sec, v = _timed(lambda: e.encode(ts), repeats)
                label = f"{precision}_b{batch}"
                row["texts_per_s"][label], vec[label] = round(len(ts) / sec, 1), v
        row["cosine_to_fp32"] = {k: cosine(v, vec["fp32_b128"]) for k, v in vec.items()}
        base = row["texts_per_s"]["st_fp32"]
        row["ratio_to_st_fp32"] = {k: round(v / base, 3) for k, v in row["texts_per_s"].items()}
        out[name] = row
    return out


def torch_lloyd(x: np.ndarray, k: int, iters: int, seed: int) -> dict:
    """Textbook Lloyd with the data resident on the GPU: random rows as the start, full
    distances every iteration (the baseline)."""
    import torch
    xt = torch.from_numpy(x).cuda()
    g = torch.Generator(device="cpu").manual_seed(seed)
    c = xt[torch.randperm(len(x), generator=g)[:k].cuda()].clone()
    x_sq = (xt * xt).sum(1)

    def step(c):
        d = torch.addmm((c * c).sum(1)[None], xt, c.T, alpha=-2.0)
        lab = d.argmin(1)
        sums = torch.zeros_like(c).index_add_(0, lab, xt)
        counts = torch.bincount(lab, minlength=k).clamp_(min=1)[:, None]
        return sums / counts, lab

    def fit():
        nonlocal c
        for _ in range(iters):
            c, _ = step(c)
        d = torch.addmm((c * c).sum(1)[None], xt, c.T, alpha=-2.0)
        return float((d.min(1).values + x_sq).clamp_(min=0).sum())

    sec, inertia = _timed(fit)
    return {"seconds": round(sec, 3), "inertia": inertia}


def raypipe_kmeans(x: np.ndarray, k: int, iters: int, seed: int, gpu: bool) -> dict:
    from raypipe.segments import lloyd, nearest
    from raypipe.segments.kmeans import KMeans
    saved = nearest.use_gpu, lloyd.use_gpu
    if not gpu:
        nearest.use_gpu = lloyd.use_gpu = lambda: False
    try:
        km = KMeans(k, max_iter=iters, tol=0.0, random_state=seed)
        sec, km = _timed(lambda: km.fit(x))
    finally:
        nearest.use_gpu, lloyd.use_gpu = saved
    return {"seconds": round(sec, 3), "inertia": float(km.inertia_)}


def kmeans_part(scale: float, iters: int, cpu_too: tuple) -> dict:
    from kmeans_bench import make_shape
    out = {"part": "kmeans", "iters": iters}
    for name in ("overlapping", "separated", "uniform", "highdim"):
        x, k = make_shape(name, scale, 0)
        row = {"n": len(x), "d": x.shape[1], "k": k,
               "raypipe_gpu": raypipe_kmeans(x, k, iters, 0, True),
               "torch_lloyd_gpu": torch_lloyd(x, k, iters, 0)}
        if name in cpu_too:
            row["raypipe_cpu"] = raypipe_kmeans(x, k, iters, 0, False)
        base = row["torch_lloyd_gpu"]
        row["time_ratio_to_torch_lloyd"] = round(row["raypipe_gpu"]["seconds"] /
                                                 base["seconds"], 3)
        row["inertia_ratio_to_torch_lloyd"] = round(row["raypipe_gpu"]["inertia"] /
                                                    base["inertia"], 4)
        out[name] = row
    return out


def beauty_shaped(seed: int = 0, users: int = 22_363, items: int = 12_101, width: int = 50):
    """Left-padded (users, width) item ids (1..items, Zipf-like popularity) and event ids."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(2 + rng.geometric(1 / 7, users), width)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    ids = rng.choice(items, size=(users, width), p=popularity / popularity.sum()) + 1
    keep = np.arange(width)[None] >= width - lengths[:, None]
    events = rng.choice([1, 2, 3, 4], size=(users, width), p=[0.7, 0.1, 0.1, 0.1])
    return np.where(keep, ids, 0), np.where(keep, events, 0), lengths


def encoder_part(cpu_epochs: int, gpu_epochs: int) -> dict:
    import torch

    from raypipe.config import EncoderConfig
    from raypipe.vectors import training
    items, events, lengths = beauty_shaped()
    n_items = int(items.max())
    text = np.random.default_rng(1).standard_normal((n_items, 384)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    data = training.split(items, events)
    out = {"part": "encoder", "users": len(items), "items": n_items,
           "mean_length": round(float(lengths.mean()), 2), "cpu_threads": torch.get_num_threads()}
    runs = [("gpu_b64", "cuda", 64, gpu_epochs), ("gpu_b256", "cuda", 256, gpu_epochs),
            ("cpu_b64", "cpu", 64, cpu_epochs)]
    for label, device, batch, epochs in runs:
        stamps = []
        hooks = training.Hooks(device=device,
                               report=lambda m, s: (_sync() if device == "cuda" else None,
                                                    stamps.append(time.perf_counter())))
        cfg = EncoderConfig(epochs=epochs, patience=epochs + 1, batch_size=batch)
        start = time.perf_counter()
        _, summary = training.fit(data, n_items, text, cfg, 50, hooks=hooks)
        epoch_s = np.diff([start] + stamps)
        out[label] = {"epochs": summary["epochs"], "epoch_seconds": np.round(epoch_s, 2).tolist(),
                      "valid_ndcg@10": round(summary["valid_ndcg@10"], 4)}
    steady = lambda r: float(np.median(out[r]["epoch_seconds"][1:] or out[r]["epoch_seconds"]))  # noqa: E731
    out["cpu_over_gpu_b64"] = round(steady("cpu_b64") / steady("gpu_b64"), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="embed,kmeans,encoder")
    p.add_argument("--texts", help="JSON {dataset: [texts]} (else read from ../shared/data)")
    p.add_argument("--n-texts", type=int, default=8000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scale", type=float, default=1.0, help="K-means shapes' n multiplier")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--cpu-kmeans", default="overlapping", help="shapes also run on the CPU")
    p.add_argument("--cpu-epochs", type=int, default=1)
    p.add_argument("--gpu-epochs", type=int, default=3)
    a = p.parse_args()
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("gpu_bench: no CUDA device visible")
    print(json.dumps({"part": "device", "gpu": torch.cuda.get_device_name(),
                      "torch": torch.__version__, "cpus": os.cpu_count()}), flush=True)
    for part in a.parts.split(","):
        try:
            if part == "embed":
                if a.texts:
                    with open(a.texts) as f:
                        texts = json.load(f)
                else:
                    from embed_bench import DATASETS, item_texts
                    texts = {d: item_texts(a.n_texts, d) for d in DATASETS}
                line = embed_part(texts, a.repeats)
            elif part == "kmeans":
                line = kmeans_part(a.scale, a.iters, tuple(a.cpu_kmeans.split(",")))
            elif part == "encoder":
                line = encoder_part(a.cpu_epochs, a.gpu_epochs)
            else:
                raise SystemExit(f"unknown part {part!r}: embed, kmeans, encoder")
        except Exception:               # noqa: BLE001 - one part's failure, the others run
            line = {"part": part, "error": traceback.format_exc()[-2000:]}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
