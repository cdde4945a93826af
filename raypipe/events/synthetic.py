"""Synthetic behaviour logs with planted ground truth (the built-in default data).

Users belong to latent segments; each segment prefers one category (and a little of a second),
items follow Zipf popularity inside their category, and every product view may go down the
funnel view -> click -> cart -> purchase. Item texts are built from category vocabularies, so a
text model can tell the categories apart. Knows nothing about Ray.
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.config import SyntheticConfig

CATEGORIES = {
    "skincare": (["serum", "moisturizer", "cleanser", "toner", "face mask", "eye cream"],
                 ["hydrating", "vitamin c", "retinol", "gentle", "anti-aging", "brightening"]),
    "camping": (["tent", "sleeping bag", "backpack", "headlamp", "camp stove", "hiking pole"],
                ["waterproof", "ultralight", "4-season", "insulated", "trail", "rugged"]),
    "kitchen": (["chef knife", "frying pan", "cutting board", "blender", "saucepan", "whisk"],
                ["stainless steel", "non-stick", "cast iron", "ceramic", "professional", "oven-safe"]),
    "electronics": (["headphones", "charger", "bluetooth speaker", "usb cable", "power bank",
                     "smartwatch"], ["wireless", "fast-charging", "noise-cancelling", "portable",
                                     "rechargeable", "digital"]),
    "toys": (["building blocks", "puzzle", "plush bear", "toy car", "doll house", "board game"],
             ["educational", "colorful", "kids", "wooden", "family", "creative"]),
    "books": (["novel", "cookbook", "biography", "poetry collection", "thriller", "history book"],
              ["paperback", "hardcover", "bestselling", "illustrated", "classic", "signed"]),
    "fitness": (["yoga mat", "dumbbell", "resistance band", "jump rope", "kettlebell",
                 "foam roller"], ["workout", "gym", "non-slip", "adjustable", "heavy-duty",
                                  "training"]),
    "pets": (["dog food", "cat litter", "chew toy", "pet bed", "leash", "aquarium filter"],
             ["grain-free", "organic", "durable", "cozy", "puppy", "senior"]),
    "garden": (["seed packet", "watering can", "pruning shears", "planter pot", "garden hose",
                "fertilizer"], ["perennial", "heirloom", "outdoor", "terracotta", "expandable",
                                "organic"]),
    "coffee": (["coffee beans", "espresso machine", "french press", "coffee grinder", "mug",
                "pour-over kettle"], ["arabica", "dark roast", "single-origin", "burr",
                                      "barista", "decaf"]),
    "music": (["acoustic guitar", "guitar strings", "keyboard", "drum sticks", "ukulele",
               "microphone"], ["beginner", "studio", "steel", "electric", "concert", "vintage"]),
    "fashion": (["sneakers", "denim jacket", "wool scarf", "leather belt", "sunglasses",
                 "handbag"], ["slim fit", "casual", "vintage", "summer", "designer", "classic"]),
}
BRANDS = ["Acme", "Northwind", "Zenith", "Bluebird", "Evergreen", "Summit", "Nova", "Orchid",
          "Pioneer", "Harbor", "Maple", "Cobalt"]
FUNNEL = ("view", "click", "cart", "purchase")
FUNNEL_P = (0.45, 0.35, 0.5)   # P(click | view), P(cart | click), P(purchase | cart)


def segment_tastes(n_segments: int, n_categories: int, rng, focus: float = 0.75) -> np.ndarray:
    """(S, C) category preferences: `focus` on the segment's own category, 0.15 on a
    second, the rest spread evenly."""
    taste = np.full((n_segments, n_categories), (0.85 - focus) / max(n_categories - 2, 1))
    for s in range(n_segments):
        first = s % n_categories
        second = (first + 1 + s // n_categories + rng.integers(n_categories - 1)) % n_categories
        second = second if second != first else (first + 1) % n_categories
        taste[s, first], taste[s, second] = focus, 0.15
    return taste / taste.sum(1, keepdims=True)


def make_items(n_items: int, rng) -> pa.Table:
    names = list(CATEGORIES)
    cat = rng.integers(len(names), size=n_items)
    titles, brands = [], []
    for c in cat:
        nouns, adjectives = CATEGORIES[names[c]]
        adj = rng.choice(adjectives, size=2, replace=False)
        titles.append(f"{adj[0]} {adj[1]} {rng.choice(nouns)}")
        brands.append(str(rng.choice(BRANDS)))
    return pa.table({"item_id": [f"i{j:06d}" for j in range(n_items)], "title": titles,
                     "category": [names[c] for c in cat], "brand": brands})


def make_events(cfg: SyntheticConfig, item_category: np.ndarray, rng) -> tuple[pa.Table, np.ndarray]:
    """Return (events, true segment per user)."""
    n_cat = len(CATEGORIES)
    share = np.arange(1, cfg.segments + 1, dtype=np.float64) ** -cfg.segment_skew
    segment = rng.choice(cfg.segments, size=cfg.users, p=share / share.sum()) \
        if cfg.segment_skew else rng.integers(cfg.segments, size=cfg.users)
    taste = segment_tastes(cfg.segments, n_cat, rng, cfg.focus)
    expected_per_view = 1 + FUNNEL_P[0] * (1 + FUNNEL_P[1] * (1 + FUNNEL_P[2]))
    n_views = int(cfg.events / expected_per_view * 1.05) + cfg.users
    # Every user views at least once; activity is heavy-tailed (log-normal).
    activity = rng.lognormal(0.0, 0.8, cfg.users)
    user = np.concatenate([np.arange(cfg.users), rng.choice(
        cfg.users, n_views - cfg.users, p=activity / activity.sum())])
    cum_taste = taste.cumsum(1)[segment[user]]
    cats = (rng.random(len(user))[:, None] > cum_taste).sum(1).clip(0, n_cat - 1)
    item = _zipf_items(cats, item_category, rng)
    depth = 1 + (rng.random((len(user), 3)) < FUNNEL_P).cumprod(1).sum(1)   # 1..4 events
    rows_user, rows_item = np.repeat(user, depth), np.repeat(item, depth)
    step = np.concatenate([np.arange(d) for d in depth]) if len(depth) else np.zeros(0, int)
    start = rng.uniform(1.70e9, 1.70e9 + 60 * 86400, len(user))
    times = np.repeat(start, depth) + step * rng.integers(5, 300, len(step))
    order = rng.permutation(len(rows_user))[: cfg.events]
    events = pa.table({
        "user_id": pa.array([f"u{u:07d}" for u in rows_user[order]]),
        "item_id": pa.array([f"i{j:06d}" for j in rows_item[order]]),
        "timestamp": pa.array(times[order].astype(np.int64)),
        "event_type": pa.array(np.array(FUNNEL)[step[order]]),
    })
    return events, segment


def _zipf_items(cats: np.ndarray, item_category: np.ndarray, rng, a: float = 1.1) -> np.ndarray:
    out = np.empty(len(cats), np.int64)
    for c in np.unique(cats):
        members = np.flatnonzero(item_category == c)
        if len(members) == 0:
            members = np.arange(len(item_category))
        p = 1.0 / np.arange(1, len(members) + 1) ** a
        where = cats == c
        out[where] = members[rng.choice(len(members), where.sum(), p=p / p.sum())]
    return out


def generate(cfg: SyntheticConfig, out_dir: str) -> dict:
    """Write events.parquet, items.parquet and users.parquet under `out_dir`; return paths."""
    rng = np.random.default_rng(cfg.seed)
    items = make_items(cfg.items, rng)
    names = list(CATEGORIES)
    item_category = np.array([names.index(c) for c in items["category"].to_pylist()])
    events, segment = make_events(cfg, item_category, rng)
    users = pa.table({"user_id": [f"u{u:07d}" for u in range(cfg.users)],
                      "true_segment": pa.array(segment, pa.int32())})
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, f"{name}.parquet") for name in ("events", "items", "users")}
    for name, table in (("events", events), ("items", items), ("users", users)):
        pq.write_table(table, paths[name] + ".tmp")
        os.replace(paths[name] + ".tmp", paths[name])
    return paths
