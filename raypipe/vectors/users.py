"""The user model: histories -> (query, taste) vectors, the one place `user_repr` is decided.
Knows nothing about Ray or HTTP.

- `pooled`: taste = the history's item text vectors pooled with `user.half_life` (events
  weighted by type); query = the same pooled with `recommend.query_half_life` (recent intent).
- `text`: the history rendered as one text (events.sequences.sequence_text) and embedded by
  the text model; query = taste = that vector.
- `encoder`: the trained sequence encoder; query = the state after the latest event, taste =
  the mean state over the history.

The batch stage, blend's validation and the service all call this class, so the three agree
by construction. What the users table stores (`stored`) and reads back (`from_stored`) is
also decided here: `vector` (the taste; the encoder's query) and, for the encoder,
`segment_vector` (its taste).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from raypipe.arrays import normalize
from raypipe.config import PipelineConfig, RecommendConfig, UserConfig
from raypipe.events.sequences import sequence_text
from raypipe.vectors.pooling import history_weights, pool


@dataclass
class UserVectors:
    query: np.ndarray | None  # (n, d) what `vector` retrieval asks with
    taste: np.ndarray       # (n, d) the long-term view segments and profiles are made of


class UserModel:
    """`kind` (user_repr) and what it needs: `text_vectors` (n_items, text dim) in catalogue
    order, `item_texts` (for `text`), `encoder` (a vectors.encoder.TrainedEncoder)."""

    def __init__(self, kind: str, user: UserConfig, query_half_life: float | None,
                 text_vectors: np.ndarray, item_texts: list[str] | None = None,
                 encoder=None):
        if kind == "encoder" and encoder is None:
            raise ValueError("user_repr='encoder' needs a trained encoder")
        self.kind, self.user, self.text_vectors = kind, user, text_vectors
        # None: a model that only makes the stored vectors (the users stage)
        self.recent = dataclasses.replace(user, half_life=query_half_life) \
            if query_half_life else None
        self.item_texts, self.encoder = item_texts, encoder
        self._model = self._space = None

    @classmethod
    def from_config(cls, cfg: PipelineConfig, text_vectors: np.ndarray,
                    item_texts: list[str] | None = None, encoder=None) -> "UserModel":
        return cls(cfg.user_repr, cfg.user, cfg.recommend.query_half_life, text_vectors,
                   item_texts, encoder)

    def __getstate__(self) -> dict:     # shipped to Ray workers without the built model
        return {**self.__dict__, "_model": None, "_space": None}

    @property
    def needs_texts(self) -> bool:
        """True when histories must be rendered and embedded (`texts`) before `encode`."""
        return self.kind == "text"

    @property
    def stored_columns(self) -> tuple[str, ...]:
        """The users table's vector columns (`stored`)."""
        return ("vector", "segment_vector") if self.kind == "encoder" else ("vector",)

    @property
    def segment_column(self) -> str:
        """The users table's column that segments are made of."""
        return "segment_vector" if self.kind == "encoder" else "vector"

    def model(self):
        """The encoder in eval mode, its item table computed once per process."""
        if self._model is None:
            self._model = self.encoder.model().freeze_items()
        return self._model

    def texts(self, rows: list[np.ndarray], event_types, extra_texts=()) -> list[str]:
        """What `text` users embed: each history as one text. Rows past the catalogue
        (items new to the service) take their text from `extra_texts`."""
        known = self.item_texts or []
        lookup = lambda r: known[r] if r < len(known) else extra_texts[r - len(known)]  # noqa: E731
        return [sequence_text([lookup(int(r)) for r in rs], list(t))
                for rs, t in zip(rows, event_types)]

    def encode(self, rows: list[np.ndarray], event_types, embedded: np.ndarray | None = None,
               extra_text: np.ndarray | None = None) -> UserVectors:
        """Per user catalogue rows (oldest first) and event types -> UserVectors.
        `embedded`: the vectors of `texts(...)` (`text` only); `extra_text` (m, text dim):
        text vectors of items outside the catalogue, rows n .. n + m - 1 in `rows`."""
        if self.kind == "encoder":
            from raypipe.vectors.encoder import encode_histories, infer
            model = self.model()
            items, events = encode_histories(rows, event_types, model.max_length)
            query, taste = infer(model, items, events, extra_text=extra_text)
            return UserVectors(query, taste)
        if self.kind == "text":
            if embedded is None or len(embedded) != len(rows):
                raise ValueError(f"user_repr='text' needs one embedded text per user "
                                 f"({len(rows)}); got {None if embedded is None else len(embedded)}")
            user = normalize(np.asarray(embedded, np.float32))
            return UserVectors(user, user)
        space = self.item_space(extra_text)
        taste = pool(rows, history_weights(event_types, self.user), space)
        query = self._pooled_query(rows, event_types, space) if self.recent else None
        return UserVectors(query, taste)

    def occlusion(self, rows: list[np.ndarray], event_types, m: int,
                  extra_text: np.ndarray | None = None) -> np.ndarray:
        """Encoder users: (n, m, d) the query minus the query with one of the last m events
        left out, [:, m - 1] for the latest (zeros where a history is shorter); an item's
        score drops by its vector's dot product with that difference when the event is
        removed (recommend/explain.py). One encoder pass over n * m shortened histories."""
        query = self.encode(rows, event_types, extra_text=extra_text).query
        n, d = query.shape
        out = np.zeros((n, m, d), np.float32)
        variants, types, where = [], [], []
        for u, (r, t) in enumerate(zip(rows, event_types)):
            r, t = np.asarray(r), list(t)
            for i in range(max(0, m - len(r)), m):
                pos = len(r) - m + i
                if len(r) == 1:             # without its only event a history is empty
                    out[u, i] = query[u]
                    continue
                variants.append(np.delete(r, pos))
                types.append(t[:pos] + t[pos + 1:])
                where.append((u, i))
        if variants:
            shorter = self.encode(variants, types, extra_text=extra_text).query
            u, i = np.array(where).T
            out[u, i] = query[u] - shorter
        return out

    def _pooled_query(self, rows, event_types, space: np.ndarray) -> np.ndarray:
        if self.recent is None:
            raise ValueError("pooled queries need recommend.query_half_life")
        return pool(rows, history_weights(event_types, self.recent), space)

    def stored(self, users: UserVectors) -> dict[str, np.ndarray]:
        """UserVectors -> the users table's vector columns."""
        if self.kind == "encoder":
            return {"vector": users.query, "segment_vector": users.taste}
        return {"vector": users.taste}

    def from_stored(self, columns: dict[str, np.ndarray], rows: list[np.ndarray],
                    event_types, extra_text: np.ndarray | None = None) -> UserVectors:
        """The users table's vector columns (and the histories) -> UserVectors; pooled
        users' queries are pooled again from the history (they are not stored)."""
        if self.kind == "encoder":
            return UserVectors(columns["vector"], columns["segment_vector"])
        taste = columns["vector"]
        if self.kind == "text":
            return UserVectors(taste, taste)
        return UserVectors(self._pooled_query(rows, event_types, self.item_space(extra_text)),
                           taste)

    def item_space(self, extra_text: np.ndarray | None = None) -> np.ndarray:
        """(n_items [+ m], d) the vectors items are ranked in: the encoder's item vectors,
        else the text vectors; items outside the catalogue (`extra_text`) appended."""
        if self.kind == "encoder":
            import torch

            from raypipe.vectors.encoder import item_vectors
            model = self.model()
            if self._space is None:
                self._space = item_vectors(model)
            space = self._space
            if extra_text is None or not len(extra_text):
                return space
            with torch.no_grad():
                cold = model.scoring(model.cold_items(torch.tensor(
                    np.asarray(extra_text, np.float32)))).numpy()
            return np.concatenate([space, cold])
        if extra_text is None or not len(extra_text):
            return self.text_vectors
        return np.concatenate([self.text_vectors, np.asarray(extra_text, np.float32)])


def model_sections(cfg: PipelineConfig) -> dict:
    """The config a UserModel of `cfg.user_repr` is made from, as stage inputs: the stages
    that build one are handed exactly these, so their keys change with them."""
    sections = {"user_repr": cfg.user_repr, "user": cfg.user}
    if cfg.user_repr == "text":
        sections["embed"] = cfg.embed
    return sections


def encoder_width(cfg: PipelineConfig) -> int:
    """How many of a user's latest events the encoder reads: encoder.max_length, at most
    the sequences' length."""
    seq = cfg.sequences.max_length
    return min(cfg.encoder.max_length, seq) if cfg.encoder.max_length else seq


def training_sections(cfg: PipelineConfig) -> dict:
    """What training the user model reads (only the encoder trains), as stage inputs."""
    if cfg.user_repr != "encoder":
        return {}
    sections = {"encoder": cfg.encoder, "width": encoder_width(cfg),
                "mask_purchased": cfg.recommend.exclude_purchased}
    if cfg.encoder.compare_pooled:
        # how the candidates are asked: only these settings, so that changing the others
        # (k, strategies, ...) leaves the trained stage as it is
        r = cfg.recommend
        sections["choice"] = dataclasses.replace(
            RecommendConfig(), exclude_purchased=r.exclude_purchased,
            query_half_life=r.query_half_life, cooccurrence_window=r.cooccurrence_window,
            cooccurrence_top=r.cooccurrence_top, blend_cooccurrence=r.blend_cooccurrence)
    return sections
