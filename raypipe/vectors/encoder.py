"""Sequence encoder: a causal Transformer over a user's item sequence (training: training.py).
Plain torch; knows nothing about Ray.

Items are catalogue rows; in the integer sequences row r is stored as r + 1 and 0 pads on the
left, so the most recent event is always the last column. An item's vector is a learned
adaptor of its frozen text vector plus, optionally, a learned id vector: an item with text but
no training events still gets a vector (cold start). The user vector is the last position's
output, in the same space as the items; items are scored by the cosine divided by a
temperature (`encoder.temperature`; 0 = plain dot product).
The final user vector reads the whole history.
"""
from __future__ import annotations

import dataclasses
import io
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raypipe.config import EncoderConfig
from raypipe.schema import EVENT_TYPES

log = logging.getLogger(__name__)
EVENT_IDS = {e: i + 1 for i, e in enumerate(EVENT_TYPES)}     # 0 pads
PURCHASE = EVENT_IDS["purchase"]


def encode_histories(item_rows: list[np.ndarray], event_types: list[list[str]],
                     width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user (catalogue rows, event types), oldest first -> (n, width) int64 item ids
    (row + 1) and event ids, left-padded with 0, keeping the last `width` events."""
    n = len(item_rows)
    items, events = np.zeros((n, width), np.int64), np.zeros((n, width), np.int64)
    for u, (rows, types) in enumerate(zip(item_rows, event_types)):
        rows, types = np.asarray(rows)[-width:], list(types)[-width:]
        if len(rows):
            items[u, width - len(rows):] = rows + 1
            events[u, width - len(rows):] = [EVENT_IDS.get(t, 0) for t in types]
    return items, events


class Block(nn.Module):
    """Pre-norm Transformer block; `allowed` (B, 1, L, L) says which keys a query may see."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        # No bias on q, k, v: a key bias cannot change attention, so its gradient is only
        # rounding noise, which Adam would turn into steps.
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, length, 3, self.heads, d // self.heads) \
            .permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, length, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class SequenceEncoder(nn.Module):
    """(B, L) item ids and event ids -> (B, L, dim) states; `item_table()` -> (n + 1, dim)."""

    def __init__(self, n_items: int, text_vectors: np.ndarray | None, cfg: EncoderConfig,
                 max_length: int):
        super().__init__()
        d = cfg.dim
        self.n_items, self.max_length = n_items, max_length
        if cfg.text:
            if text_vectors is None or len(text_vectors) != n_items:
                raise ValueError(f"encoder.text=true needs one text vector per item "
                                 f"({n_items}); got {None if text_vectors is None else len(text_vectors)}")
            # Frozen inputs, not parameters: kept out of the state dict and checkpoints.
            self.register_buffer("text", torch.tensor(np.asarray(text_vectors, np.float32)),
                                 persistent=False)
            self.adaptor = nn.Sequential(nn.Linear(text_vectors.shape[1], d), nn.LayerNorm(d))
        self.ids = nn.Embedding(n_items, d) if cfg.item_ids else None
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=0.02 if cfg.text else 0.1)
        self.position = nn.Embedding(max_length, d)     # counted back from the latest event
        self.event = nn.Embedding(len(EVENT_IDS) + 1, d)
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.norm, self.drop = nn.LayerNorm(d), nn.Dropout(cfg.dropout)
        self.cosine = cfg.temperature > 0
        self.id_dropout = cfg.id_dropout if cfg.text and cfg.item_ids else 0.0

    def scoring(self, v: torch.Tensor) -> torch.Tensor:
        """User states or item vectors -> the space items are ranked in: unit length when the
        encoder scores by cosine (`encoder.temperature` > 0), else as they are."""
        return F.normalize(v, dim=-1) if self.cosine else v

    def freeze_items(self) -> "SequenceEncoder":
        """Inference only: compute the item table once, not at every forward (a service
        answering one sequence at a time would otherwise redo n_items adaptor rows)."""
        self.eval()
        with torch.no_grad():
            self._frozen = self.item_table()
        return self

    def item_table(self) -> torch.Tensor:
        """(n_items + 1, dim) item vectors; row 0 (padding) is zero."""
        if getattr(self, "_frozen", None) is not None:
            return self._frozen
        table = 0
        if hasattr(self, "adaptor"):
            table = self.adaptor(self.text)
        if self.ids is not None:
            ids = self.ids.weight
            if self.training and self.id_dropout:       # encoder.id_dropout
                ids = ids * (torch.rand(len(ids), 1, device=ids.device) >= self.id_dropout)
            table = table + ids
        return F.pad(table, (0, 0, 1, 0))

    def cold_items(self, text_vectors: torch.Tensor) -> torch.Tensor:
        """(m, text dim) texts of items the encoder never saw -> (m, dim) item vectors:
        the adaptor alone (they have no id vector)."""
        if not hasattr(self, "adaptor"):
            raise ValueError("an id-only encoder (encoder.text=false) has no vector for "
                             "items outside its catalogue")
        return self.adaptor(text_vectors)

    def forward(self, items: torch.Tensor, events: torch.Tensor,
                extra: torch.Tensor | None = None):
        """-> (states (B, L, dim), item table (n + 1, dim)); both come out of forward so that
        DistributedDataParallel sees every parameter used. `extra` (m, dim): vectors of
        items outside the catalogue, addressed as ids n + 1 .. n + m."""
        table = self.item_table()
        if extra is not None:
            table = torch.cat([table, extra])
        length = items.shape[1]
        if length > self.max_length:
            items, events, length = items[:, -self.max_length:], events[:, -self.max_length:], \
                self.max_length
        back = torch.arange(length - 1, -1, -1, device=items.device)
        x = table[items] + self.position(back)[None] + self.event(events)
        x = self.drop(x * (items > 0).unsqueeze(-1))
        valid = items > 0
        causal = torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
        allowed = causal[None] & valid[:, None, :]
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=items.device)[None]
        allowed = allowed.unsqueeze(1)
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x), table

    def user_vectors(self, items: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, dim): the state after each user's latest event."""
        return self(items, events)[0][:, -1]


def crop(items: np.ndarray, *others: np.ndarray):
    """Drop the left columns that are padding in every row (batches of short histories)."""
    used = np.flatnonzero((items > 0).any(0))
    start = used[0] if len(used) else items.shape[1] - 1
    return (items[:, start:], *(o[:, start:] for o in others))


def load(state: dict, n_items: int, text_vectors, cfg: EncoderConfig, max_length: int,
         device: str = "cpu") -> SequenceEncoder:
    """A trained encoder in eval mode from its state dict."""
    model = SequenceEncoder(n_items, text_vectors, cfg, max_length)
    model.load_state_dict(state)
    return model.to(device).eval()


@dataclass
class TrainedEncoder:
    """Everything needed to rebuild a trained encoder: shipped to Ray workers, saved in the
    artifacts (`encoder.pt`, without the text vectors, which item_embeddings holds)."""
    state: dict
    cfg: EncoderConfig
    n_items: int
    max_length: int
    text_vectors: np.ndarray | None = None

    def model(self, device: str = "cpu") -> SequenceEncoder:
        return load(self.state, self.n_items, self.text_vectors if self.cfg.text else None,
                    self.cfg, self.max_length, device)

    def to_file(self) -> dict:
        return {"state": self.state, "cfg": dataclasses.asdict(self.cfg),
                "n_items": self.n_items, "max_length": self.max_length}

    @classmethod
    def from_file(cls, obj: dict, text_vectors: np.ndarray | None) -> "TrainedEncoder":
        # Files from before the temperature existed were trained on plain dot products.
        cfg = EncoderConfig(**{"temperature": 0.0, **obj["cfg"]})
        return cls(obj["state"], cfg, obj["n_items"],
                   obj["max_length"], text_vectors)

    def to_bytes(self) -> bytes:
        """-> the contents of `encoder.pt`."""
        buf = io.BytesIO()
        torch.save(self.to_file(), buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, text_vectors: np.ndarray | None) -> "TrainedEncoder":
        """`encoder.pt`'s contents and the catalogue's text vectors -> TrainedEncoder."""
        return cls.from_file(torch.load(io.BytesIO(data), weights_only=False), text_vectors)


def without_unseen_ids(state: dict, seen: np.ndarray, cfg: EncoderConfig) -> tuple[dict, int]:
    """A trained state and (n_items,) bools, the items some training history holds -> (the
    state with the other items' id vectors set to zero, how many). Such an id vector was
    never a positive, only pushed down as a negative: it says nothing about its item. With
    the text adaptor the item keeps the adaptor's vector alone, as `cold_items` gives items
    outside the catalogue. An id-only encoder is left as it is: it has nothing else."""
    unseen = ~np.asarray(seen, bool)
    if not (cfg.text and cfg.item_ids) or not unseen.any():
        return state, 0
    ids = state["ids.weight"].clone()
    ids[torch.from_numpy(unseen)] = 0
    return {**state, "ids.weight": ids}, int(unseen.sum())


@torch.no_grad()
def infer(model: SequenceEncoder, items: np.ndarray, events: np.ndarray,
          batch_size: int = 1024, extra_text: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """(n, L) encoded histories -> two (n, dim) float32 views of each user: the state after
    the latest event (what comes next: the retrieval query) and the mean state over the
    history (the long-term taste: what segments are made of). `extra_text` (m, text dim):
    text vectors of items outside the catalogue, ids n + 1 .. n + m in `items`."""
    device = next(model.parameters()).device
    extra = None
    if extra_text is not None and len(extra_text):
        extra = model.cold_items(torch.tensor(extra_text, dtype=torch.float32,
                                                 device=device))
    last, mean = [], []
    for s in range(0, len(items), batch_size):
        x, e = crop(items[s:s + batch_size], events[s:s + batch_size])
        x, e = torch.as_tensor(x, device=device), torch.as_tensor(e, device=device)
        states = model(x, e, extra)[0].float()
        valid = (x > 0).unsqueeze(-1).float()
        last.append(model.scoring(states[:, -1]).cpu().numpy())
        mean.append(((states * valid).sum(1) / valid.sum(1).clamp(min=1)).cpu().numpy())
    if not last:
        empty = np.zeros((0, model.norm.normalized_shape[0]), np.float32)
        return empty, empty
    return np.concatenate(last), np.concatenate(mean)


@torch.no_grad()
def item_vectors(model: SequenceEncoder) -> np.ndarray:
    """(n_items, dim) float32 item vectors in the users' space (catalogue order)."""
    return model.scoring(model.item_table()[1:]).float().cpu().numpy()
