"""int8 CPU inference that keeps the vectors: SmoothQuant scales calibrated on the texts being
embedded, then dynamic int8 Linear layers. Knows nothing about Ray.

Dynamic int8 quantizes each Linear layer's input per tensor (to 7 bits on x86, where
fbgemm's AVX2 kernels need the headroom), so a few activation channels with outliers take
the whole range: BERT-family models have them in the feed-forward layers, and plain dynamic
int8 gives MiniLM-L6 a mean cosine of 0.974 to fp32. SmoothQuant (Xiao et al. 2023) moves that
difficulty into the weights, which are quantized per output channel: for input channel j,
s_j = max|X_j|^alpha / max|W_j|^(1 - alpha); the layer computes (X / s)(s W)^T, the same
product. max|X_j| comes from an fp32 pass over a sample of the texts (the calibration).
Measured on amazon-beauty and amazon-scientific (docs/benchmarks.md): alpha 0.75 on every
layer; 512 calibration texts hold the held-out cosine above 0.99 where 128 do not; choosing
alpha per layer by its own output error picks 0.85 everywhere and loses end to end; leaving
the layers without outlier channels unsmoothed saves 3-5% of the time and 0.003 of cosine.
"""
from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

ALPHA = 0.75          # migration strength
COSINE_BAR = 0.99     # `auto` takes int8 only when held-out texts' mean cosine to fp32 reaches it


@dataclass
class Calibration:
    """Per Linear layer (by module name): the largest |input| of each channel on the
    calibration texts, and its SmoothQuant alpha (None: quantized as it is); with the int8
    model's cosine to fp32 on held-out texts."""
    absmax: dict = field(default_factory=dict)
    alphas: dict = field(default_factory=dict)
    texts: int = 0
    # Layers that read the same input (attention's query, key and value): one scale, one
    # rescaled input shared by them.
    groups: list = field(default_factory=list)
    cosine_mean: float | None = None
    cosine_min: float | None = None

    @classmethod
    def smooth_all(cls, absmax: dict, groups: list = (), alpha: float | None = ALPHA,
                   texts: int = 0):
        return cls(absmax, dict.fromkeys(absmax, alpha), texts, list(groups))

    def summary(self) -> dict:
        chosen = sorted({a for a in self.alphas.values() if a is not None})
        return {"texts": self.texts, "cosine_mean": self.cosine_mean,
                "cosine_min": self.cosine_min, "bar": COSINE_BAR, "layers": len(self.alphas),
                "alpha": chosen[0] if len(chosen) == 1 else chosen}


def activation_absmax(model, run) -> tuple[dict, list]:
    """Call `run()` (forward passes through `model`) with hooks on every Linear layer ->
    ({module name: (in_features,) max |input| per channel}, groups of layers called one
    after another on the same input tensor)."""
    absmax, hooks, calls = {}, [], []

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0]
            a = x.detach().reshape(-1, x.shape[-1]).abs().amax(0).float()
            absmax[name] = torch.maximum(absmax[name], a) if name in absmax else a
            calls.append((name, x.data_ptr(), tuple(x.shape)))
        return record

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(hook(name)))
    try:
        with torch.inference_mode():
            run()
    finally:
        for h in hooks:
            h.remove()
    # float16: the scales need three digits, and the whole calibration then travels inline
    # with each embedding actor's constructor arguments (under Ray's 100 KB).
    return {name: a.numpy().astype(np.float16) for name, a in absmax.items()}, \
        _same_input(calls)


def _same_input(calls: list) -> list[list[str]]:
    """Runs of consecutive Linear calls on one tensor (the same pointer and shape: the
    caller holds it meanwhile, so it cannot be another), kept where each layer is always in
    the same run."""
    runs: list = []
    for name, ptr, shape in calls:
        if runs and runs[-1][1:] == (ptr, shape):
            runs[-1][0].append(name)
        else:
            runs.append(([name], ptr, shape))
    seen: dict = {}
    for names, _, _ in runs:
        for n in names:
            seen.setdefault(n, set()).add(tuple(names))
    return [list(key) for key in {tuple(r[0]) for r in runs}
            if len(key) > 1 and all(seen[n] == {key} for n in key)]


def scales(linears: list, absmax: np.ndarray, alpha: float) -> torch.Tensor:
    """SmoothQuant's s for layers that share an input: their weights' largest column."""
    act = torch.tensor(absmax, dtype=torch.float32).clamp(min=1e-5)
    weight = torch.stack([m.weight.detach().abs().amax(0) for m in linears]).amax(0)
    return act ** alpha / weight.clamp(min=1e-5) ** (1 - alpha)


def smooth_quantize(model, calibration: Calibration):
    """Each calibrated Linear layer -> (with its alpha) input scaled by 1/s and weight by s,
    then dynamic int8, weights per output channel; layers that read the same input share
    s and one rescaled input. Layers not calibrated stay fp32."""
    modules = dict(model.named_modules())
    group_of = {n: tuple(g) for g in calibration.groups for n in g}
    plan, shared, buffers = {}, {}, Buffers()
    for name, alpha in calibration.alphas.items():
        if alpha is None or name not in modules:
            continue
        members = group_of.get(name, (name,))
        if any(calibration.alphas.get(m) != alpha or m not in modules for m in members):
            members = (name,)
        if members not in shared:
            s = scales([modules[m] for m in members], calibration.absmax[name], alpha)
            shared[members] = (s, InputScale(1.0 / s, buffers))
        plan[name] = shared[members]
    names = []
    with torch.no_grad():
        for parent_name, parent in list(model.named_modules()):
            for child_name, child in list(parent.named_children()):
                name = f"{parent_name}.{child_name}" if parent_name else child_name
                if not isinstance(child, torch.nn.Linear) or name not in calibration.alphas:
                    continue
                if name not in plan:
                    names.append(name)
                    continue
                s, scale = plan[name]
                child.weight.mul_(s.to(child.weight.dtype))
                setattr(parent, child_name, SmoothedLinear(child, scale))
                names.append(name + ".linear")
    return _dynamic_int8(model, names)


def release(model) -> None:
    """After a forward pass: forget the last input (the buffer stays for the next)."""
    for m in model.modules():
        if isinstance(m, InputScale):
            m.buffers.local.last = None
            return


def _dynamic_int8(model, names: list[str]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch.ao.quantization is marked for migration
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        spec = {n: qconfig for n in names}
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8,
                                                      inplace=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, d) arrays of unit vectors."""
    return (a * b).sum(1)


class Buffers:
    """One flat buffer per thread that every rescaled input of a model is written into: a
    fresh (batch x tokens x 1536) tensor per layer costs five times the multiply itself in
    page faults. Each rescaled input is read at once by its int8 layer(s), so one suffices."""

    def __init__(self):
        self.local = threading.local()

    def __deepcopy__(self, memo):
        return Buffers()

    def __reduce__(self):
        return Buffers, ()

    def view(self, x: torch.Tensor) -> torch.Tensor:
        flat = getattr(self.local, "flat", None)
        if flat is None or flat.numel() < x.numel() or flat.dtype != x.dtype:
            flat = self.local.flat = torch.empty(x.numel(), dtype=x.dtype)
        return flat[: x.numel()].view(x.shape)


class InputScale(torch.nn.Module):
    """x -> x * inv_scale into the shared buffer; layers called one after another on the
    same x (query, key, value) get the product computed once."""

    def __init__(self, inv_scale, buffers: Buffers):
        super().__init__()
        self.register_buffer("inv_scale", inv_scale.float())
        self.buffers = buffers

    def forward(self, x):
        last = getattr(self.buffers.local, "last", None)
        if last is not None and last[0] is self and last[1] is x:
            return last[2]
        y = torch.mul(x, self.inv_scale, out=self.buffers.view(x))
        self.buffers.local.last = (self, x, y)
        return y


class SmoothedLinear(torch.nn.Module):
    """x -> linear(scale(x)): the input half of SmoothQuant's rescaling."""

    def __init__(self, linear, scale: InputScale):
        super().__init__()
        self.linear, self.scale = linear, scale

    def forward(self, x):
        return self.linear(self.scale(x))
