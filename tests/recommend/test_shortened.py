"""recommend/shortened.py against brute force: every history shortened by one distinct item
and pooled again from scratch (history_weights re-ages the later events), through both
ways (the Gram path and the prefix-sum path), with repeated items, empty and long
histories."""
import numpy as np
import pytest

from raypipe.config import UserConfig
from raypipe.recommend import shortened as sh
from raypipe.vectors.pooling import history_weights

N, D, K = 30, 8, 4
RNG = np.random.default_rng(7)
SPACE = RNG.standard_normal((N, D)).astype(np.float32)
ITEMS = RNG.standard_normal((N + 5, D)).astype(np.float32)
LEAVES = RNG.standard_normal((5, D)).astype(np.float32)
TYPES = ("view", "cart", "purchase")


def _users(n=40, longest=30):
    history, types = [], []
    for u in range(n):
        few = u % 3 == 0                     # few distinct items: many repeats
        h = RNG.integers(0, 4 if few else N, int(RNG.integers(0, longest)))
        history.append(h)
        types.append([TYPES[t] for t in RNG.integers(0, 3, len(h))])
    return history, types


def _pooled(rows, types, cfg):
    """The pooled sum of one history, as the service would build it."""
    if not len(rows):
        return np.zeros(D)
    w = history_weights([list(types)], cfg)[0]
    return (SPACE[rows].astype(np.float64) * w[:, None]).sum(0)


def _unit(s, e):
    n = np.linalg.norm(s)
    return e @ s / n if n > 1e-9 else np.zeros(len(e))


@pytest.mark.parametrize("way", ["gram", "prefix"])
def test_drops_nearest_leaves_and_closeness_are_those_of_the_shortened_history(way):
    history, types = _users()
    query, taste = UserConfig(half_life=1.0), UserConfig(half_life=10.0)
    weightings = [(history_weights(types, query), 1.0), (history_weights(types, taste), 10.0)]
    hist = sh.Histories(history, weightings)
    users = np.arange(len(history))
    targets = RNG.integers(-1, N + 5, (len(users), K))    # -1 padding, rows past the space
    own = RNG.standard_normal((len(users), D))
    fn = sh._gram if way == "gram" else sh._prefix
    got = fn(hist, users, SPACE, ITEMS[np.maximum(targets, 0)].astype(np.float64),
             LEAVES.astype(np.float64), own)
    checked = 0
    for u, (h, t) in enumerate(zip(history, types)):
        e = ITEMS[np.maximum(targets[u], 0)].astype(np.float64)
        distinct = np.unique(h)
        assert list(got.cited[u][got.cited[u] >= 0]) == list(distinct)
        full = _unit(_pooled(h, t, query), e)
        for j, item in enumerate(distinct):
            keep = h != item
            rest, rest_types = h[keep], [x for x, k in zip(t, keep) if k]
            np.testing.assert_allclose(got.drops[u, j],
                                       full - _unit(_pooled(rest, rest_types, query), e),
                                       atol=1e-12)
            s = _pooled(rest, rest_types, taste)
            if np.linalg.norm(s) > 1e-9:
                x = s / np.linalg.norm(s)
                want = np.argmin(((x - LEAVES.astype(np.float64)) ** 2).sum(1))
                assert got.nearest[u, j] == want
            else:
                assert got.nearest[u, j] == -1
            assert got.closeness[u, j] == pytest.approx(SPACE[item].astype(np.float64) @ own[u])
            checked += 1
    assert checked > 100


def test_both_ways_agree_and_a_block_takes_one_by_its_longest_history():
    history, types = _users(20, longest=3 * sh.GRAM_MAX)
    cfg = UserConfig(half_life=2.0)
    hist = sh.Histories(history, [(history_weights(types, cfg), 2.0)])
    users = np.arange(len(history))
    targets = RNG.integers(0, N, (len(users), K))
    e = ITEMS[targets].astype(np.float64)
    gram = sh._gram(hist, users, SPACE, e, None, None)
    prefix = sh._prefix(hist, users, SPACE, e, None, None)
    assert np.array_equal(gram.cited, prefix.cited)
    real = gram.cited >= 0
    np.testing.assert_allclose(gram.drops[real], prefix.drops[real], atol=1e-10)
    out = sh.shortened(hist, users, SPACE, ITEMS, targets)
    assert np.isneginf(out.drops[~real]).all() and out.nearest is None


def test_no_history_cites_nothing():
    hist = sh.Histories([np.zeros(0, np.int64)] * 3, [([np.zeros(0)] * 3, 1.0)])
    out = sh.shortened(hist, np.arange(3), SPACE, ITEMS, np.zeros((3, K), np.int64))
    assert (out.cited < 0).all() and np.isneginf(out.drops).all()
