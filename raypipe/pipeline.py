"""The batch job, stage by stage: catalogue -> clean events and sequences -> item embeddings
-> user vectors (encoder training or pooling) -> segments -> profiles, recommendations and
metrics. Each stage is resumable (stages.py); the output folder appears only when every stage
has finished, assembled from the stages' tables without copying them (artifacts.py)."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import time
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from raypipe import __version__
from raypipe.recommend import blend
from raypipe.segments import ids as segment_ids
from raypipe.events import sources
from raypipe.events import synthetic
from raypipe.run.artifacts import MANIFEST, ArtifactWriter, Folder, clear_leftovers
from raypipe.config import PipelineConfig, SourceConfig
from raypipe.recommend.metrics import adjusted_rand_index, cooccurrence, metrics_from_recs, most_popular
from raypipe.jobs import ingest, runtime
from raypipe.jobs.embedding import blocks_by_length, embed_texts
from raypipe.recommend.cooccur import Followers
from raypipe.jobs.segments import (SegmentModel, count_followers, fit_segments, profile_users,
                                   recommend_users, segment_column, validation_users)
from raypipe.vectors.encoder import TrainedEncoder, item_vectors as encoder_item_vectors
from raypipe.jobs.training import encoder_user_vectors, fit_encoder
from raypipe.jobs.users import Catalogue, profiled, user_vectors
from raypipe.jobs.kmeans_tasks import RayShards
from raypipe.segments.kmeans import KMeans
from raypipe.segments.shard import shard_predict
from raypipe.segments.profiles import distinctive_terms, summarize_segments
from raypipe.recommend.recommender import Recommender, segment_items_table, segment_rankings
from raypipe.run.privacy import pseudonymizer
from raypipe.schema import QUARANTINE
from raypipe.run.stages import StageStore, fingerprint, settings
from raypipe.arrays import to_arrow, to_numpy

log = logging.getLogger("raypipe")


class Timings(dict):
    @contextmanager
    def __call__(self, stage: str):
        log.info("stage %s: started", stage)
        start = time.perf_counter()
        yield
        self[stage] = round(time.perf_counter() - start, 2)
        log.info("stage %s: done in %.1f s", stage, self[stage])


def prepare_source(cfg: PipelineConfig) -> tuple[PipelineConfig, str | None]:
    """The synthetic default: generate a log once per setting, then read it as `events`.
    Returns the config to run and, for synthetic data, the planted truth's path."""
    if cfg.source.kind != "synthetic":
        return cfg, None
    key = hashlib.sha256(repr(cfg.synthetic).encode()).hexdigest()[:10]
    folder = os.path.join(cfg.synthetic_dir, f"synthetic-{key}")
    paths = {k: os.path.join(folder, f"{k}.parquet") for k in ("events", "items", "users")}
    if not all(os.path.exists(p) for p in paths.values()):
        log.info("generating synthetic log into %s", folder)
        paths = synthetic.generate(cfg.synthetic, folder)
    source = SourceConfig(kind="events", input=paths["events"], items=paths["items"])
    return dataclasses.replace(cfg, source=source), paths["users"]


def embed_items(items: pa.Table, cfg) -> np.ndarray:
    """Catalogue (sorted by item_id) -> (n_items, d) vectors in the same order."""
    blocks = blocks_by_length(items.select(["item_id", "text"]), "text", cfg.batch_size * 4)
    out = embed_texts(ray.data.from_arrow(blocks), "text", cfg)
    table = runtime.collect(out, items.num_rows, "item embeddings").sort_by("item_id")
    assert table["item_id"].equals(items["item_id"]), "embedding lost or duplicated items"
    return to_numpy(table["vector"])


def run(cfg: PipelineConfig, force: bool = False) -> dict:
    """Run every stage, reusing the ones an earlier run of the same settings finished
    (stages.py; `force` redoes them all); return the manifest of the written artifacts."""
    runtime.start(cfg.address, cfg.num_cpus)
    requested = cfg
    cfg, truth = prepare_source(cfg)
    for path in clear_leftovers(cfg.output):
        log.info("deleted %s, left by an interrupted run", path)
    t = Timings()
    store = StageStore(cfg.output, t, force)
    out = ArtifactWriter(cfg.output)
    try:
        s = Stages(cfg, requested, store, t, truth, force).all()
        for name, stage in s.items():
            for table in stage.folder.tables:
                if table.startswith("_"):
                    continue
                # `quarantine` gathers the items' and the events' bad rows: keep names apart
                prefix = f"{name}-" if table == "quarantine" else ""
                out.link_table(stage.folder, table, prefix=prefix)
        if s["users"].folder.exists("encoder.pt"):
            out.bytes("encoder.pt", s["users"].folder.read_bytes("encoder.pt"))
        metrics = s["outputs"].info["metrics"]
        if metrics:
            out.json("metrics.json", metrics)
        manifest = json.loads(json.dumps(build_manifest(
            requested, cfg, s, t, metrics, out.tables, store.summary()),
            default=str))                  # exactly what the file will hold
        out.json(MANIFEST, manifest)
        out.commit()
    except BaseException:
        out.abort()
        raise
    store.prune()
    return manifest


class Stages:
    """The pipeline's stages in order. Each `_<stage>` method writes the stage's tables into
    its folder and returns what the manifest says about them; later stages read earlier ones'
    tables back from their folders, so a reused stage and a fresh one look the same. Tables
    whose names start with `_` are internal and stay out of the artifacts."""

    def __init__(self, cfg, requested, store: StageStore, t: Timings, truth, force: bool):
        self.cfg, self.requested, self.store, self.t = cfg, requested, store, t
        self.truth, self.force = truth, force
        self.holdout = cfg.eval.holdout == "last"
        self.pseudonymizer = pseudonymizer(cfg.privacy.pseudonymize)

    def all(self) -> dict:
        cfg, st = self.cfg, self.store
        items = st.run("items", st.key("items", settings(cfg, "source", "clean"),
                                       fingerprint(f.uri for f in sources.plan_items(cfg.source))),
                       self._items)
        self.event_files = sources.plan_events(cfg.source)    # planned once: Parquet footers
        events = st.run("events", st.key("events", items.key, settings(
            cfg, "source", "clean", "sequences", "eval.holdout"), self.privacy(),
            fingerprint(f.uri for f in self.event_files)), self._events)
        embed = st.run("item_embeddings", st.key("item_embeddings", items.key,
                                                 settings(cfg, "embed")), self._embed)
        groups = st.run("item_groups", st.key("item_groups", embed.key,
                                              settings(cfg, "item_groups")), self._item_groups)
        user_settings = {"pooled": ("user",), "text": ("embed", "user"),
                         "encoder": ("encoder", "recommend.exclude_purchased")}[cfg.user_repr]
        users = st.run("users", st.key("users", events.key, embed.key, cfg.user_repr,
                                       settings(cfg, *user_settings)), self._users)
        segments = st.run("segments", st.key("segments", users.key, settings(cfg, "kmeans")),
                          self._segments)
        outputs = st.run("outputs", st.key("outputs", segments.key, groups.key, settings(
            cfg, "user", "profiles", "recommend", "eval", "encoder.validation_share",
            "encoder.seed")), self._outputs)
        return {s.name: s for s in (items, events, embed, groups, users, segments, outputs)}

    def privacy(self) -> dict:
        p = self.pseudonymizer
        return {"pseudonymized": bool(p), **({"key_check": p.check} if p else {})}

    def _items(self, f: Folder) -> dict:
        with self.t("items"):
            items, bad, rows = ingest.read_items(self.cfg.source, self.cfg.clean.strict)
            if items.num_rows == 0:
                raise ValueError(f"no catalogue item has an id and a text: {rows}")
            f.table("_catalogue", items)
            f.table("quarantine", bad.cast(QUARANTINE))
        return {"rows": rows}

    def catalogue_table(self) -> pa.Table:
        return self.store.done["items"].folder.read("_catalogue")

    def _events(self, f: Folder) -> dict:
        cfg = self.cfg
        parts = ingest.default_partitions(cfg.sequences, self.event_files)
        with self.t("clean"):
            events, bad, rows = ingest.read_events(
                cfg.source, self.catalogue_table()["item_id"], cfg.clean.strict, parts,
                self.pseudonymizer, self.event_files)
            if rows["kept"] == 0:
                raise ValueError(f"no event survived cleaning: {rows}")
            f.dataset("quarantine", bad, QUARANTINE)
        with self.t("sequences"):
            f.dataset("sequences", ingest.build_user_sequences(
                events, cfg.sequences, self.holdout, parts))
        return {"rows": rows, "users_with_events": f.tables["sequences"],
                "privacy": self.privacy()}

    def _embed(self, f: Folder) -> dict:
        with self.t("item_embeddings"):
            items = self.catalogue_table()
            f.table("item_embeddings", pa.table({
                "item_id": items["item_id"], "vector": to_arrow(embed_items(items, self.cfg.embed))}))
        return {}

    def _item_groups(self, f: Folder) -> dict:
        """Product groups: K-means over the items' text vectors, named by c-TF-IDF."""
        g = self.cfg.item_groups
        if g.n_groups == 0:
            return {"n_groups": 0}
        with self.t("item_groups"):
            items = self.catalogue_table()
            vectors = to_numpy(self.store.done["item_embeddings"].folder
                               .read("item_embeddings")["vector"])
            n = min(g.n_groups, len(vectors))
            shards = RayShards.from_arrays(np.array_split(vectors, max(1, min(
                runtime.resources()[0], len(vectors) // max(n, 1)))))
            km = KMeans(n, random_state=g.seed).fit(shards)
            labels = np.asarray(km.labels_)
            members = {c: {int(r): 1.0 for r in np.flatnonzero(labels == c)} for c in range(n)}
            terms = distinctive_terms(members, items["text"].to_pylist(), g.top_terms)
            names = [" / ".join(terms.get(c, [])[:3]) or f"group {c}" for c in range(n)]
            f.table("_groups", pa.table({
                "item_id": items["item_id"], "group": pa.array(labels, pa.int32()),
                "group_name": pa.array([names[c] for c in labels], pa.string())}))
        return {"n_groups": n, "sizes": np.bincount(labels, minlength=n).tolist(),
                "names": names}

    def item_groups(self) -> pa.Table | None:
        groups = self.store.done["item_groups"]
        return groups.folder.read("_groups") if groups.info.get("n_groups") else None

    def catalogue(self) -> Catalogue:
        """Item ids, texts and vectors in the users' space: the encoder's item vectors for
        `encoder` users, the text model's otherwise."""
        items = self.catalogue_table()
        users = self.store.done.get("users")
        name = "item_vectors" if users and users.folder.exists("item_vectors.parquet") \
            else "item_embeddings"
        folder = users.folder if name == "item_vectors" else \
            self.store.done["item_embeddings"].folder
        vectors = folder.read(name)
        assert vectors["item_id"].equals(items["item_id"]), f"{name} do not match the catalogue"
        return Catalogue(items["item_id"].to_pylist(), items["text"].to_pylist(),
                         to_numpy(vectors["vector"]))

    def _users(self, f: Folder) -> dict:
        cfg = self.cfg
        seqs = self.store.done["events"].folder.read_dataset("sequences")
        catalogue = self.catalogue()
        if cfg.user_repr != "encoder":
            with self.t("user_embeddings"):
                f.dataset("_users", user_vectors(seqs, catalogue, cfg))
                f.dataset("user_embeddings",
                          f.read_dataset("_users").select_columns(["user_id", "vector"]))
            return {"profiled": f.tables["_users"]}
        with self.t("encoder"):
            storage = cfg.encoder.storage or f"{self.requested.output.rstrip('/')}.train"
            if "://" not in storage:
                storage = os.path.abspath(storage)
            catalogue_ref = [ray.put(catalogue)]
            trained, training = fit_encoder(profiled(seqs), catalogue, catalogue_ref, cfg,
                                            storage, data_key(self.requested), fresh=self.force)
            buf = io.BytesIO()
            torch.save(trained.to_file(), buf)
            f.bytes("encoder.pt", buf.getvalue())
        with self.t("user_embeddings"):
            f.dataset("_users", encoder_user_vectors(profiled(seqs), catalogue_ref,
                                                     [ray.put(trained)]))
            f.dataset("user_embeddings", f.read_dataset("_users").select_columns(
                ["user_id", "vector", "segment_vector"]))
            f.table("item_vectors", pa.table({
                "item_id": catalogue.item_ids,
                "vector": to_arrow(encoder_item_vectors(trained.model()))}))
        return {"profiled": f.tables["_users"], "training": training}

    def users(self):
        return self.store.done["users"].folder.read_dataset("_users")

    def _segments(self, f: Folder) -> dict:
        with self.t("segments"):
            km = fit_segments(self.users(), self.cfg.kmeans)
            centroids, labels = km.cluster_centers_, km.labels_
            kept = self.previous_centroids(centroids.shape)
            ids = np.arange(len(centroids))
            if kept["reference"]:
                ids, moved = segment_ids.match(centroids, kept.pop("centroids"))
                centroids, labels = segment_ids.relabel(centroids, labels, ids)
                kept["moved"] = np.round(moved[np.argsort(ids)], 6).tolist()
                log.info("segment ids matched to %s; centroids moved %s", kept["reference"],
                         kept["moved"])
            cluster = np.empty_like(ids)
            cluster[ids] = np.arange(len(ids))
            kept["kmeans_cluster"] = cluster.tolist()
            f.table("centroids", pa.table({
                "segment": pa.array(range(len(centroids)), pa.int32()),
                "vector": to_arrow(centroids)}))
        sizes = np.bincount(labels, minlength=self.cfg.kmeans.n_clusters)
        return {"kmeans": {"n_clusters": int(km.n_clusters), "inertia": float(km.inertia_),
                           "n_iter": int(km.n_iter_)}, "sizes": sizes.tolist(),
                "segment_ids": kept}

    def previous_centroids(self, shape: tuple) -> dict:
        """The run whose segment ids this one keeps: {reference, centroids} or, when there is
        none to match, {reference: None, note: why}."""
        k = self.cfg.kmeans
        ref = k.previous or self.requested.output
        if not k.stable_ids:
            return {"reference": None, "note": "kmeans.stable_ids is off"}
        prev = Folder(ref)
        if not (prev.exists(MANIFEST) and prev.exists("centroids.parquet")):
            return {"reference": None, "note": f"no previous run at {ref}: ids are K-means'"}
        old = to_numpy(prev.read("centroids").sort_by("segment")["vector"])
        if old.shape != shape:
            return {"reference": None, "note": f"the previous run at {ref} has {old.shape[0]} "
                    f"segments of dimension {old.shape[1]}, this one {shape[0]} of "
                    f"{shape[1]}: ids are K-means'"}
        return {"reference": ref, "centroids": old}

    def _outputs(self, f: Folder) -> dict:
        cfg, segments = self.cfg, self.store.done["segments"]
        centroids = to_numpy(segments.folder.read("centroids")["vector"])
        catalogue = self.catalogue()
        catalogue_ref = [ray.put(catalogue)]
        users = self.users()
        groups = self.item_groups()
        with self.t("profiles"):
            item_segment = shard_predict(catalogue.vectors, centroids)
            model = SegmentModel(centroids, item_segment, cfg,
                                 groups["group"].to_numpy() if groups else None)
            profiles, model_ref, mass = profile_users(users, catalogue_ref, model)
            f.dataset("profiles", profiles)
            ids = self.segment_ids(f, len(centroids))
            summary = summarize_segments(
                np.asarray(segments.info["sizes"]), mass, catalogue.item_ids, catalogue.texts,
                cfg.profiles.top_items, cfg.profiles.top_terms)
            moved = ids.get("moved") or [None] * len(centroids)
            changed = (ids.get("users") or {}).get("per_segment") or [None] * len(centroids)
            f.table("segments", summary.append_column(
                "kmeans_cluster", pa.array(ids["kmeans_cluster"], pa.int32())).append_column(
                "moved", pa.array(moved, pa.float32())).append_column(
                "changed_share", pa.array(changed, pa.float32())))
            items = self.catalogue_table().append_column(
                "segment", pa.array(item_segment, pa.int32()))
            if groups:
                assert groups["item_id"].equals(items["item_id"]), "groups do not match items"
                items = items.append_column("group", groups["group"]).append_column(
                    "group_name", groups["group_name"])
            f.table("items", items)
            rankings = segment_rankings(mass, cfg.kmeans.n_clusters, depth=1000)
            f.table("segment_items", segment_items_table(rankings, catalogue.item_ids))
        followers, blend_info, weights = None, None, None
        if "blend" in cfg.recommend.strategies:
            with self.t("blend"):
                followers, blend_info = self.fit_blend(f, users, catalogue, catalogue_ref,
                                                   centroids, mass, model.item_group)
            weights = (blend_info["segment"], blend_info["cooccurrence"])
        with self.t("recommendations"):
            recs, index = recommend_users(users, catalogue_ref, model_ref, rankings,
                                          followers, weights)
            log.info("item index: %s", index)
            f.dataset("recommendations", recs)
        metrics = {"planted": planted_agreement(f, self.truth)} if self.truth else {}
        if self.holdout:
            with self.t("evaluate"):
                metrics = {**metrics, **evaluate(f, users, cfg)}
        return {"metrics": metrics, "index": index, "segment_ids": ids, "blend": blend_info}

    def fit_blend(self, f: Folder, users, catalogue, catalogue_ref, centroids, mass,
              item_group) -> tuple:
        """Co-occurrence counts (-> `item_followers`) and `blend`'s weights, fitted on the
        validation users (blend.py) where the config leaves them unset.
        -> (Followers, what the manifest says of the weights)."""
        cfg, r = self.cfg, self.cfg.recommend
        share = blend.fit_share(cfg, self.store.done["users"].info["profiled"])
        pairs = count_followers(users, catalogue_ref, cfg, share)
        n_items = len(catalogue.item_ids)
        followers = Followers.from_pairs(pairs, n_items, r.cooccurrence_top)
        f.table("item_followers", followers.to_table(catalogue.item_ids))
        fixed = {"segment": r.blend_segment or 0.0, "cooccurrence": r.blend_cooccurrence or 0.0,
                 "fitted": False}
        if r.blend_segment is not None and r.blend_cooccurrence is not None:
            return followers, {**fixed, "note": "both weights set in the config"}
        if cfg.user_repr == "text":
            return followers, {**fixed, "note": "user_repr=text is not fitted (validation "
                               "would embed every shortened sequence again); unset weights are 0"}
        val_users = validation_users(users, share, cfg.encoder.seed)
        if val_users.num_rows == 0:
            return followers, {**fixed, "note": "no validation user has two items; unset "
                               "weights are 0"}
        encoder = None
        text_vectors = to_numpy(self.store.done["item_embeddings"].folder
                                .read("item_embeddings")["vector"])
        if cfg.user_repr == "encoder":
            state = torch.load(io.BytesIO(self.store.done["users"].folder.read_bytes(
                "encoder.pt")), weights_only=False)
            encoder = TrainedEncoder.from_file(state, text_vectors).model()
        val = blend.validation_inputs(
            val_users, to_numpy(val_users[segment_column(val_users.column_names)]), catalogue,
            centroids, cfg, text_vectors, encoder)
        rec = Recommender(catalogue.item_ids, catalogue.vectors, blend.validation_rankings(
            mass, val, len(centroids), depth=1000), r, item_group,
            Followers.from_pairs(pairs, n_items, r.cooccurrence_top, validation=True))
        info = {**blend.fit_weights(rec, val, cfg), "fitted": True}
        log.info("blend: segment %s, co-occurrence %s: validation NDCG@10 %.4f (vector alone "
                 "%.4f) on %d users", info["segment"], info["cooccurrence"],
                 info["valid_ndcg@10"], info["vector_valid_ndcg@10"], info["users"])
        return followers, info

    def segment_ids(self, f: Folder, n_segments: int) -> dict:
        """The segments stage's id matching, plus the share of users (in both runs) whose
        segment changed, from the previous run's profiles."""
        ids = dict(self.store.done["segments"].info.get("segment_ids") or {})
        ids.setdefault("kmeans_cluster", list(range(n_segments)))
        ref = ids.get("reference")
        if ref and Folder(ref).exists("profiles.parquet"):
            cols = ["user_id", "segment"]
            ids["users"] = segment_ids.changed_share(
                Folder(ref).read("profiles", cols), f.read("profiles", cols), n_segments)
            log.info("segment ids: %s of the users in both runs changed segment",
                     ids["users"]["changed_share"])
        return ids


def data_key(cfg: PipelineConfig) -> str:
    """What the encoder's training data depends on: a resumed run must have the same."""
    d = cfg.to_dict()
    keep = {k: d[k] for k in ("synthetic", "source", "clean", "sequences", "embed")}
    keep["holdout"] = d["eval"]["holdout"]
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()


def planted_agreement(out: Folder, truth_path: str) -> dict:
    """Synthetic data: how well the segments found match the planted ones."""
    truth = pq.read_table(truth_path)
    found = out.read("profiles").select(["user_id", "segment"]).join(truth, "user_id")
    return {"ari": round(adjusted_rand_index(found["true_segment"].to_numpy(),
                                             found["segment"].to_numpy()), 4),
            "users": found.num_rows,
            "planted_segments": len(set(truth["true_segment"].to_pylist()))}


def evaluate(out: Folder, users, cfg: PipelineConfig) -> dict:
    """Leave-one-out metrics recomputed from the written recommendations, plus most-popular."""
    u = runtime.to_table(
        users.select_columns(["user_id", "item_ids", "event_types", "target_item"]))
    metrics = metrics_from_recs(out.read("recommendations"), u.select(["user_id", "target_item"]),
                                cfg.eval.ks)
    histories = u["item_ids"].to_pylist()
    exclude = [{i for i, e in zip(h, t) if e == "purchase"} if cfg.recommend.exclude_purchased
               else set() for h, t in zip(histories, u["event_types"].to_pylist())]
    targets = u["target_item"].to_pylist()
    metrics["most_popular"] = most_popular(histories, targets, exclude, cfg.eval.ks)
    metrics["cooccurrence"] = cooccurrence(histories, targets, exclude, cfg.eval.ks)
    return {"protocol": "leave-one-out: last item = test, second last = validation; full "
                        "ranking over all items; purchased history items excluded"
                        if cfg.recommend.exclude_purchased else
                        "leave-one-out; full ranking over all items; history not excluded",
            "strategies": metrics}


def build_manifest(requested, cfg, s: dict, timings, metrics, tables, stages) -> dict:
    import faiss
    import transformers
    events, users = s["events"].info, s["users"].info
    n_users, profiled_users = events["users_with_events"], users["profiled"]
    return {
        "raypipe_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": requested.to_dict(), "config_hash": requested.hash(),
        "source": dataclasses.asdict(cfg.source),
        "versions": {"ray": ray.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "faiss": faiss.__version__,
                     "pyarrow": pa.__version__, "numpy": np.__version__},
        "cluster": dict(zip(("cpus", "gpus"), runtime.resources())),
        "rows": events["rows"], "item_rows": s["items"].info["rows"],
        "users": {"with_events": n_users, "profiled": profiled_users,
                  "too_short": n_users - profiled_users},
        "kmeans": s["segments"].info["kmeans"], "privacy": events["privacy"],
        "item_index": s["outputs"].info.get("index"),
        "segment_ids": s["outputs"].info.get("segment_ids"),
        "blend": s["outputs"].info.get("blend"),
        "item_groups": s["item_groups"].info,
        "seconds": dict(timings), "stages": stages, "metrics": metrics, "tables": tables,
        **({"encoder": users["training"]} if "training" in users else {}),
    }
