"""Which user vectors a run keeps: the trained encoder's, or pooled text vectors (free: no
training at all).

Each candidate is asked, on the validation users the encoder held out of its training, for
their last item from the rest of their history (blend.py's protocol, the test item never
looked at), alone (`vector`) and with co-occurrence blended in at the weight that suits it
best (`blend` without segments, which are not made yet; their weight is fitted later, on the
kept vectors). The candidate whose better strategy has the higher NDCG@10 is kept, so a
default run never ships a model that loses to the free one on its own validation users.
Knows nothing about Ray.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from raypipe.config import RecommendConfig
from raypipe.recommend import blend
from raypipe.recommend.cooccur import Followers
from raypipe.recommend.inputs import purchased
from raypipe.recommend.recommender import Recommender
from raypipe.vectors.pooling import history_rows
from raypipe.vectors.users import UserModel

METRIC = "valid_ndcg@10"


@dataclasses.dataclass
class Candidate:
    """A user model and the item vectors it ranks in (catalogue order)."""
    model: UserModel
    space: np.ndarray


def score(candidate: Candidate, users: pa.Table, catalogue, followers: Followers | None,
          r: RecommendConfig) -> dict:
    """Validation users (user_id, item_ids, event_types; >= 2 items each) -> {vector,
    blend: valid NDCG@10, the co-occurrence weight blend took, recall of each}."""
    rows, types = blend.shortened(users, catalogue)
    targets = np.array([h[-1] for h in history_rows(users["item_ids"], catalogue.index())],
                       np.int64)
    n = len(targets)
    cfg = dataclasses.replace(r, blend_segment=0.0, k=max(r.k, 10), max_per_group=0)
    rec = Recommender(catalogue.item_ids, candidate.space,
                      [(np.zeros(0, np.int64), np.zeros(0, np.float32))], cfg, None, followers)
    val = blend.Validation(candidate.model.encode(rows, types).query, np.zeros(n, np.int64),
                           rows, purchased(rows, types, r.exclude_purchased), targets,
                           np.zeros(n, np.int64), np.zeros(n))
    fit = blend.fit_weights(rec, val, cfg)
    return {"vector": fit["vector_valid_ndcg@10"], "blend": fit["valid_ndcg@10"],
            "vector_recall@10": fit["vector_valid_recall@10"],
            "blend_recall@10": fit["valid_recall@10"], "cooccurrence": fit["cooccurrence"]}


def choose(candidates: dict[str, Candidate], users: pa.Table, catalogue,
           followers: Followers | None, r: RecommendConfig) -> dict:
    """-> {kept: the name of the candidate with the best valid NDCG@10 over its strategies
    (the first named wins ties), scores: each one's, users, why: a sentence}."""
    scores = {name: score(c, users, catalogue, followers, r) for name, c in candidates.items()}
    best = {name: max(s["vector"], s["blend"]) for name, s in scores.items()}
    kept = max(best, key=lambda name: best[name])   # max keeps the first of equals
    others = ", ".join(f"{name} {best[name]:.4f}" for name in best if name != kept)
    return {"kept": kept, "metric": METRIC, "users": users.num_rows, "scores": scores,
            "why": f"{kept} has the best validation NDCG@10 ({best[kept]:.4f}; {others}) "
                   f"on {users.num_rows} validation users"}
