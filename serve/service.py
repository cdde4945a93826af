"""Profiles and recommendations one request at a time, from a finished run's artifacts.
Knows nothing about Ray or HTTP: serve/app.py wraps `ProfileService` in Ray Serve deployments,
and the benchmark's baseline wraps it in a plain FastAPI app.

Every step is the batch job's own code, never a copy: cleaning (events/clean.py), sequence
building (events/sequences.py), the user model (vectors/users.py), profiles
(segments/profiles.py) and the `Recommender` (recommend/). So a known user's answer equals the
batch tables' rows, and a fresh sequence equal to a known user's history gets that user's
profile. Known users' recommendations are read from the batch's own table where it fits in
memory (serve/answers.py), the same rows at a tenth of the cost.

Fresh sequences are answered in two steps, because their new texts (items given inline, and
for `user_repr: text` the rendered sequence) are embedded elsewhere (a Serve deployment):
`plan(events, item_texts)` -> `Plan` with `texts` to embed -> `answer(plan, vectors, k, ...)`.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.arrays import to_numpy
from raypipe.config import PipelineConfig, from_dict
from raypipe.events import clean
from raypipe.events.sequences import build_sequences
from raypipe.recommend.cooccur import Followers
from raypipe.recommend.inputs import (evidence, interest_queries, purchased,
                                      segment_rankings_from_table)
from raypipe.recommend.recommender import Recommender
from raypipe.run.artifacts import Folder
from raypipe.run.versions import current_run, verify
from raypipe.run.privacy import Pseudonymizer, load_key, stored_id
from raypipe.schema import REASON
from raypipe.segments.profiles import COUNTS, profile_table
from raypipe.segments.segmentation import Segmentation
from raypipe.vectors.pooling import history_rows, history_weights
from raypipe.vectors.users import UserModel
from serve.answers import MAX_ROWS, Answers
from serve.loading import artifact_version, read_bytes, vectors_in_order
from serve.requests import (REQUEST_USER, BadRequest, Plan,
                            UnknownUser, events_table, refuse)


class ProfileService:
    """A finished run's artifacts (local folder or pyarrow.fs URI), loaded once, answering
    `profile(user)`, `recommend(user, k, strategy)` and, for fresh sequences, `plan` and
    `answer`."""

    def __init__(self, artifacts: str, answers_max_rows: int = MAX_ROWS):
        run = current_run(artifacts)         # the version LATEST names, read whole
        raw = read_bytes(run, "manifest.json")
        self.uri, self.manifest, self.version = artifacts, json.loads(raw), artifact_version(raw)
        self.run = run
        verify(run, self.manifest)           # a half-copied version is refused here
        missing = {"segment_items", "profiles", "user_embeddings"} - set(self.manifest["tables"])
        if missing:
            raise ValueError(f"{artifacts}: no {sorted(missing)} table; these artifacts come "
                             "from an older raypipe: re-run the batch job")
        self.cfg = from_dict(PipelineConfig, self.manifest["config"])
        # the user model the run kept (pooled vectors where they beat the trained encoder)
        kept = (self.manifest.get("users") or {}).get("user_repr", self.cfg.user_repr)
        self.cfg = dataclasses.replace(self.cfg, user_repr=kept)
        self._pseudonym = None
        if (self.manifest.get("privacy") or {}).get("pseudonymized"):
            stored_id(self.manifest, "")          # refuses a key that is not the run's
            self._pseudonym = Pseudonymizer(load_key())
        self._load_items(run)
        self._load_users(run)
        self.answers = Answers.load(Folder(run), self.manifest, self.user_index,
                                    self.item_index, self.cfg.recommend, answers_max_rows)

    def _load_items(self, uri: str) -> None:
        items = Folder(uri).read("items")
        self.item_ids = items["item_id"].to_pylist()
        self.item_index = pd.Index(self.item_ids)
        self._known = pa.array(self.item_ids, pa.string())    # built once, not per request
        self.texts = items["text"].to_pylist()
        self.item_segment = items["segment"].to_numpy()
        self.item_group = items["group"].to_numpy() if "group" in items.column_names else None
        self.text_vectors = vectors_in_order(Folder(uri).read("item_embeddings"), self.item_index)
        encoder = None
        if self.cfg.user_repr == "encoder":     # a trained user model: its file and items
            from raypipe.vectors.encoder import TrainedEncoder
            encoder = TrainedEncoder.from_bytes(read_bytes(uri, "encoder.pt"),
                                                self.text_vectors)
        self.users = UserModel.from_config(self.cfg, self.text_vectors, self.texts, encoder)
        self.space = vectors_in_order(Folder(uri).read("item_vectors"), self.item_index) \
            if "item_vectors" in self.manifest["tables"] else self.text_vectors
        self.segmentation = Segmentation.from_table(Folder(uri).read("centroids"))
        main = self.segmentation.n_segments
        segments = Folder(uri).read("segments").to_pylist()
        self.segments = {(s.get("level", main), s["segment"]): s for s in segments}
        rankings = segment_rankings_from_table(Folder(uri).read("segment_items"),
                                               main, self.item_index)
        followers, weights = None, None
        if "blend" in self.cfg.recommend.strategies:
            blend = self.manifest.get("blend")
            if not blend or "item_followers" not in self.manifest["tables"]:
                raise ValueError(f"{uri}: no blend weights or item_followers table; these "
                                 "artifacts come from an older raypipe: re-run the batch job")
            followers = Followers.from_table(Folder(uri).read("item_followers"),
                                             self.item_index, self.cfg.recommend.cooccurrence_top)
            weights = (blend["segment"], blend["cooccurrence"])
        self.recommender = Recommender(self.item_ids, self.space, rankings, self.cfg.recommend,
                                       self.item_group, followers, weights)

    def _load_users(self, uri: str) -> None:
        """Profiles, the users' vectors and histories, aligned row by row."""
        self.profiles = Folder(uri).read("profiles")
        ids = self.profiles["user_id"].to_numpy(zero_copy_only=False)
        self.user_index = pd.Index(ids)
        emb = Folder(uri).read("user_embeddings")
        order = pd.Index(emb["user_id"].to_numpy(zero_copy_only=False)).get_indexer(ids)
        if (order < 0).any():
            raise ValueError(f"{uri}: {(order < 0).sum()} profiled users have no vector")
        self.user_vectors = {c: to_numpy(emb[c].take(order)) for c in self.users.stored_columns}
        seqs = Folder(uri).read("sequences").select(["user_id", "item_ids", "event_types"])
        order = pd.Index(seqs["user_id"].to_numpy(zero_copy_only=False)).get_indexer(ids)
        self.histories = seqs.take(order)

    # ---- known users -------------------------------------------------------------------

    def _row(self, user_id: str) -> int:
        """The user's row; a pseudonymised run is looked up by the id's pseudonym."""
        stored = self._pseudonym.one(user_id) if self._pseudonym else user_id
        i = self.user_index.get_indexer([stored])[0]
        if i < 0:
            raise UnknownUser(f"no profile for user {user_id!r} in artifacts version "
                              f"{self.version}")
        return int(i)

    def profile(self, user_id: str) -> dict:
        """-> the user's profile, segment names and interest weights spelled out."""
        return {**self._profile_dict(self.profiles.slice(self._row(user_id), 1).to_pylist()[0]),
                "user_id": user_id}

    def recommend(self, user_id: str, k: int, strategy: str) -> dict:
        """-> the user's k best items by `strategy`, as the batch job ranked them."""
        i = self._row(user_id)
        self.check_strategy(strategy)
        segment = self.profiles["segment"][i].as_py()
        got = self.answers.get(i, strategy, k) if self.answers is not None and \
            k <= self.cfg.recommend.k else None
        if got is not None:
            return self._response(user_id, strategy, *got, segment)
        h = self.histories.slice(i, 1).to_pylist()[0]
        rows = history_rows(pa.array([h["item_ids"]], pa.list_(pa.string())), self.item_index)
        stored = {c: v[i:i + 1] for c, v in self.user_vectors.items()}
        query = self.users.from_stored(stored, rows, [h["event_types"]]).query
        return self._recommend(user_id, query, rows, [h["event_types"]], self.space, segment,
                               k, strategy, self.item_segment)

    # ---- fresh sequences ---------------------------------------------------------------

    def plan(self, events: list[dict], item_texts: dict[str, str] | None = None,
             user_id: str | None = None, strategy: str | None = None) -> Plan:
        """Events ({item_id, event_type, timestamp}) -> a Plan, cleaned, deduplicated and
        truncated as the batch job does. Items outside the catalogue count only when their
        text is given in `item_texts`; the others are left out and listed. `strategy`, when
        given, is checked first, before anything is embedded for the request."""
        if strategy is not None:
            self.check_strategy(strategy)
        if not events:
            raise BadRequest("no events: give at least one {item_id, event_type, timestamp}")
        item_texts = {i: t for i, t in (item_texts or {}).items()
                      if i not in self.item_index and t and t.strip()}
        known = pa.concat_arrays([self._known, pa.array(list(item_texts), pa.string())]) \
            if item_texts else self._known
        tagged = clean.mark_duplicates(clean.tag_events(events_table(events), known))
        refuse(tagged)
        reasons = tagged[REASON].to_pylist()
        unknown = sorted({e["item_id"] for e, r in zip(events, reasons)
                          if r == "item_without_text"})
        kept = tagged.filter(pc.is_null(tagged[REASON]))
        seq = build_sequences(kept, self.cfg.sequences).to_pylist()
        if not seq or seq[0]["too_short"]:
            raise BadRequest(f"{len(set(kept['item_id'].to_pylist()))} usable items "
                            f"(unknown: {unknown[:10]}); profiles need at least "
                            f"{self.cfg.sequences.min_length}")
        s = seq[0]
        new = sorted({i for i in s["item_ids"] if i in item_texts})
        position = {item: len(self.item_ids) + j for j, item in enumerate(new)}
        rows = np.array([position[i] if i in position else self.item_index.get_loc(i)
                         for i in s["item_ids"]], np.int64)
        plan = Plan(user_id or REQUEST_USER, s["item_ids"], s["event_types"], rows,
                    {c: s[c] for c in COUNTS}, new, unknown,
                    [item_texts[i] for i in new], [self.cfg.embed.max_length] * len(new))
        if self.users.needs_texts:
            plan.texts += self.users.texts([rows], [s["event_types"]],
                                           [item_texts[i] for i in new])
            plan.max_lengths.append(self.cfg.embed.sequence_max_length)
        return plan

    def answer(self, plan: Plan, vectors: np.ndarray | None, k: int, strategy: str) -> dict:
        """A Plan and the vectors of its `texts` -> {profile, recommendations}."""
        vectors = np.zeros((0, self.text_vectors.shape[1]), np.float32) \
            if vectors is None else np.asarray(vectors, np.float32)
        if len(vectors) != len(plan.texts):
            raise ValueError(f"plan has {len(plan.texts)} texts, got {len(vectors)} vectors")
        new_text = vectors[:len(plan.new_items)]
        user = self.users.encode([plan.rows], [plan.event_types], vectors[len(new_text):]
                                 if self.users.needs_texts else None, new_text)
        query, taste = user.query, user.taste
        space = self.users.item_space(new_text) if len(new_text) else self.space
        item_segment = self.item_segment
        if len(plan.new_items):
            new_segments = self.segmentation.nearest(space[len(self.item_ids):])[0]
            item_segment = np.concatenate([item_segment, new_segments])
        weights = history_weights([plan.event_types], self.cfg.user)
        counts = {c: pa.array([v], pa.int64()) for c, v in plan.counts.items()}
        prof = profile_table(pa.array([plan.user_id]), taste, [plan.rows], weights, counts,
                             self.segmentation, item_segment, self.cfg.profiles.top_interests,
                             self.item_ids + plan.new_items, space).to_pylist()[0]
        recs = self._recommend(plan.user_id, query, [plan.rows], [plan.event_types], space,
                               prof["segment"], k, strategy, item_segment,
                               (plan.new_items, plan.texts[:len(plan.new_items)], new_text))
        return {"profile": self._profile_dict(prof), "recommendations": recs,
                "new_items": plan.new_items, "unknown_items": plan.unknown_items,
                "version": self.version}

    # ---- shared by both --------------------------------------------------------------

    def check_strategy(self, strategy: str) -> None:
        if strategy not in self.cfg.recommend.strategies:
            raise BadRequest(f"strategy {strategy!r} is not one of this run's "
                             f"{list(self.cfg.recommend.strategies)}")

    def _recommend(self, user_id, query, rows, event_types, space, segment, k, strategy,
                   item_segment, new_items: tuple = ((), (), None)):
        """`new_items`: (ids, texts, text vectors) of the request's items outside the
        catalogue, rows n, n + 1, ... of `space`, which explanations may cite."""
        self.check_strategy(strategy)
        r = self.cfg.recommend
        exclude = purchased(rows, event_types, r.exclude_purchased)
        interests = interest_queries(rows, event_types, item_segment, space, self.segmentation.n_segments,
                                     self.cfg.profiles.top_interests, self.cfg.user,
                                     r) if strategy == "multi" else None
        segments = np.array([segment])
        ev = evidence(rows, event_types, self.users, segments, self.segmentation, item_segment,
                      self.cfg.user, r, self.cfg.profiles.top_interests, space,
                      new_items[2], interests) if r.explain else None
        out = self.recommender.recommend(query, segments, exclude, k, (strategy,), interests,
                                         rows, evidence=ev)
        ranked, explained = out if ev is not None else (out, None)
        return self._response(user_id, strategy, ranked, explained, segment, new_items)

    def _response(self, user_id, strategy, ranked, explained, segment,
                  new_items: tuple = ((), (), None)) -> dict:
        segments = np.array([segment])
        if explained is None:
            got = ranked[strategy][0]
            items = [{"item_id": self.item_ids[i], "score": float(s), "text": self.texts[i]}
                     for i, s in zip(got[0].tolist(), got[1].tolist())]
        else:   # the batch job's table, so the two always agree
            ids, texts = list(new_items[0]), list(new_items[1])
            items = self.recommender.to_table(
                [user_id], ranked, explained, self.texts + texts if texts else self.texts,
                segments,
                self.item_ids + ids if ids else None).drop_columns(
                ["user_id", "rank", "strategy"]).to_pylist()
            for item in items:
                item["text"] = self.texts[self.item_index.get_loc(item["item_id"])]
        return {"user_id": user_id, "strategy": strategy, "items": items,
                "segment": self._segment(segment), "version": self.version}

    def _segment(self, s: int, level: int | None = None) -> dict:
        seg = self.segments.get((level or self.segmentation.n_segments, s), {})
        return {"id": int(s), "name": seg.get("name", ""), "terms": seg.get("top_terms", [])}

    def _profile_dict(self, p: dict) -> dict:
        items = p.get("interest_items") or [[]] * len(p["interests"])
        shares = p.get("interest_item_weights") or [[]] * len(p["interests"])
        interests = [{**self._segment(s), "weight": float(w), "items": list(i),
                      "item_weights": [float(x) for x in iw]}
                     for s, w, i, iw in zip(p["interests"], p["interest_weights"], items,
                                            shares)]
        return {"user_id": p["user_id"], "segment": self._segment(p["segment"]),
                "segment_items": list(p.get("segment_items") or []),
                "confidence": float(p["confidence"]), "distance": float(p["distance"]),
                "interests": interests, "history_length": int(p["history_length"]),
                "levels": [{**self._segment(s, lv), "level": lv}
                           for lv, s in zip(self.segmentation.levels,
                                            p.get("levels") or [p["segment"]])],
                "counts": {c: int(p[c]) for c in COUNTS}, "version": self.version}

    def info(self) -> dict:
        return {"version": self.version, "created_at": self.manifest.get("created_at"),
                "artifacts": self.uri, "run": self.run,
                "raypipe_version": self.manifest.get("raypipe_version"),
                "user_repr": self.cfg.user_repr, "users": len(self.user_index),
                "items": len(self.item_ids), "segments": self.segmentation.n_segments,
                "levels": list(self.segmentation.levels),
                "strategies": list(self.cfg.recommend.strategies),
                "k": self.cfg.recommend.k}


