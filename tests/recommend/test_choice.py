"""recommend/choice.py: the candidate that ranks the validation users' last items better is
kept, co-occurrence is blended into each, ties keep the first, and the scores are the
protocol's (history without the last item, the last item as target)."""
import numpy as np
import pandas as pd
import pyarrow as pa

from raypipe.config import RecommendConfig, UserConfig
from raypipe.recommend import blend, choice
from raypipe.recommend.cooccur import Followers, follower_pairs
from raypipe.vectors.users import UserModel


class _Catalogue:
    def __init__(self, vectors):
        self.item_ids = [f"i{j}" for j in range(len(vectors))]
        self.texts = self.item_ids
        self.vectors = vectors

    def index(self):
        return pd.Index(self.item_ids)


def _world(n_clusters=4, per=25, users=200, seed=0):
    """Items in clusters (text vectors near their cluster's centre); each user stays in one
    cluster, items in random order."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, 32))
    cluster = np.repeat(np.arange(n_clusters), per)
    vectors = centres[cluster] + 0.3 * rng.standard_normal((len(cluster), 32))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    histories = [rng.choice(np.flatnonzero(cluster == rng.integers(n_clusters)), 6,
                            replace=False) for _ in range(users)]
    table = pa.table({"user_id": [f"u{u}" for u in range(users)],
                      "item_ids": [[f"i{j}" for j in h] for h in histories],
                      "event_types": [["view"] * len(h) for h in histories]})
    return _Catalogue(vectors), table, histories


def _pooled(space):
    return choice.Candidate(UserModel("pooled", UserConfig(), 1.0, space), space)


def test_the_candidate_whose_vectors_carry_the_clusters_is_kept():
    cat, users, _ = _world()
    noise = np.random.default_rng(1).standard_normal(cat.vectors.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    got = choice.choose({"noise": _pooled(noise), "text": _pooled(cat.vectors)}, users, cat,
                        None, RecommendConfig())
    assert got["kept"] == "text" and got["users"] == 200
    assert got["scores"]["text"]["vector"] > 2 * got["scores"]["noise"]["vector"]
    assert "text has the best validation NDCG@10" in got["why"]
    # ties keep the first named
    same = choice.choose({"a": _pooled(cat.vectors), "b": _pooled(cat.vectors)}, users, cat,
                         None, RecommendConfig())
    assert same["kept"] == "a"


def test_scores_follow_the_protocol_and_blend_in_co_occurrence():
    cat, users, histories = _world(seed=2)
    rows = [h.copy() for h in histories]
    # The last item follows the one before it in every history: co-occurrence knows it,
    # pooled noise does not; so `blend` puts weight on co-occurrence and beats `vector`.
    for h in rows:
        h[-1] = (h[-2] + 1) % len(cat.item_ids)
    users = users.set_column(1, "item_ids", pa.array([[f"i{j}" for j in h] for h in rows]))
    n = len(cat.item_ids)
    pairs = follower_pairs([np.arange(n), np.arange(n)], n, window=1)   # i -> i + 1
    followers = Followers.from_pairs(pairs, len(cat.item_ids), top=10)
    noise = np.random.default_rng(3).standard_normal(cat.vectors.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    got = choice.score(_pooled(noise), users, cat, followers, RecommendConfig())
    assert got["cooccurrence"] > 0 and got["blend"] > got["vector"] + 0.2
    # the vector score is blend.ndcg_recall over the shortened histories, last item as target
    model = UserModel("pooled", UserConfig(), 1.0, noise)
    short, types = blend.shortened(users, cat)
    from raypipe.recommend.recommender import Recommender
    rec = Recommender(cat.item_ids, noise, [(np.zeros(0, np.int64), np.zeros(0))],
                      RecommendConfig())
    from raypipe.recommend.inputs import purchased
    exclude = purchased(short, types, True)
    ranked = rec.recommend(model.encode(short, types).query, np.zeros(len(short), np.int64),
                           exclude, strategies=("vector",))["vector"].rows
    ndcg, _ = blend.ndcg_recall(ranked, np.array([h[-1] for h in rows]))
    assert abs(got["vector"] - round(ndcg, 5)) < 1e-6
