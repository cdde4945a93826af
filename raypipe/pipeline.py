"""The batch job, stage by stage: logs -> clean events -> sequences -> embeddings -> segments
-> profiles -> recommendations -> metrics. Each stage writes its table before the next starts;
the output folder appears only when every stage has finished (artifacts.py)."""
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

from raypipe import __version__, synthetic
from raypipe.artifacts import ArtifactWriter
from raypipe.config import PipelineConfig, SourceConfig
from raypipe.evaluate import adjusted_rand_index, cooccurrence, metrics_from_recs, most_popular
from raypipe.jobs import ingest, runtime
from raypipe.jobs.embedding import blocks_by_length, embed_texts
from raypipe.jobs.segments import SegmentModel, fit_segments, profile_users, recommend_users
from raypipe.encoder import item_vectors as encoder_item_vectors
from raypipe.jobs.training import encoder_user_vectors, fit_encoder
from raypipe.jobs.users import Catalogue, profiled, user_vectors
from raypipe.kmeans_shard import shard_predict
from raypipe.profiles import summarize_segments
from raypipe.recommend import segment_items_table, segment_rankings
from raypipe.schema import QUARANTINE
from raypipe.vectors import to_arrow, to_numpy

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


def run(cfg: PipelineConfig) -> dict:
    """Run every stage; return the manifest of the written artifacts."""
    runtime.start(cfg.address, cfg.num_cpus)
    requested = cfg
    cfg, truth = prepare_source(cfg)
    out, t = ArtifactWriter(cfg.output), Timings()
    holdout = cfg.eval.holdout == "last"
    parts = ingest.default_partitions(cfg.sequences)
    try:
        with t("items"):
            items, item_bad, item_rows = ingest.read_items(cfg.source, cfg.clean.strict)
            if items.num_rows == 0:
                raise ValueError(f"no catalogue item has an id and a text: {item_rows}")
        with t("clean"):
            events, event_bad, rows = ingest.read_events(
                cfg.source, items["item_id"], cfg.clean.strict, parts)
            if rows["kept"] == 0:
                raise ValueError(f"no event survived cleaning: {rows}")
            quarantine = event_bad.union(ray.data.from_arrow(item_bad))
            out.dataset("quarantine", quarantine, QUARANTINE)
        with t("sequences"):
            seqs = ingest.build_user_sequences(events, cfg.sequences, holdout, parts)
            out.dataset("sequences", seqs)
        with t("item_embeddings"):
            item_vectors = embed_items(items, cfg.embed)
            out.table("item_embeddings", pa.table({"item_id": items["item_id"],
                                                   "vector": to_arrow(item_vectors)}))
        catalogue = Catalogue(items["item_id"].to_pylist(), items["text"].to_pylist(),
                              item_vectors)
        users, catalogue, training = user_stage(seqs, catalogue, requested, cfg, out, t)
        catalogue_ref = [ray.put(catalogue)]
        with t("segments"):
            km = fit_segments(users, cfg.kmeans)
            item_segment = shard_predict(catalogue.vectors, km.cluster_centers_)
            out.table("centroids", pa.table({
                "segment": pa.array(range(len(km.cluster_centers_)), pa.int32()),
                "vector": to_arrow(km.cluster_centers_)}))
        with t("profiles"):
            model = SegmentModel(km.cluster_centers_, item_segment, cfg)
            profiles, model_ref, mass = profile_users(users, catalogue_ref, model)
            out.dataset("profiles", profiles)
            sizes = np.bincount(km.labels_, minlength=cfg.kmeans.n_clusters)
            out.table("segments", summarize_segments(
                sizes, mass, catalogue.item_ids, catalogue.texts,
                cfg.profiles.top_items, cfg.profiles.top_terms))
            out.table("items", items.append_column("segment", pa.array(item_segment, pa.int32())))
        with t("recommendations"):
            rankings = segment_rankings(mass, cfg.kmeans.n_clusters, depth=1000)
            out.table("segment_items", segment_items_table(rankings, catalogue.item_ids))
            out.dataset("recommendations",
                        recommend_users(users, catalogue_ref, model_ref, rankings))
        metrics = {"planted": planted_agreement(out, truth)} if truth else {}
        if holdout:
            with t("evaluate"):
                metrics = {**metrics, **evaluate(out, users, cfg)}
        if metrics:
            out.json("metrics.json", metrics)
        manifest = json.loads(json.dumps(build_manifest(
            requested, cfg, rows, item_rows, seqs, users, km, t, metrics, out.tables, training),
            default=str))                  # exactly what the file will hold
        out.json("manifest.json", manifest)
        out.commit()
    except BaseException:
        out.abort()
        raise
    return manifest


def user_stage(seqs, catalogue: Catalogue, requested: PipelineConfig, cfg: PipelineConfig,
               out: ArtifactWriter, t: Timings):
    """Sequences -> (user vectors, the catalogue in the users' vector space, training summary).
    `pooled` and `text` users live in the text model's space; `encoder` users and items in
    the trained encoder's, whose item vectors then serve retrieval and segments."""
    if cfg.user_repr != "encoder":
        with t("user_embeddings"):
            users = user_vectors(seqs, catalogue, cfg)
            out.dataset("user_embeddings", users.select_columns(["user_id", "vector"]))
        return users, catalogue, None
    with t("encoder"):
        storage = cfg.encoder.storage or f"{requested.output.rstrip('/')}.train"
        if "://" not in storage:
            storage = os.path.abspath(storage)
        catalogue_ref = [ray.put(catalogue)]
        trained, training = fit_encoder(profiled(seqs), catalogue, catalogue_ref, cfg,
                                        storage, data_key(requested))
        buf = io.BytesIO()
        torch.save(trained.to_file(), buf)
        out.bytes("encoder.pt", buf.getvalue())
    with t("user_embeddings"):
        users = encoder_user_vectors(profiled(seqs), catalogue_ref, [ray.put(trained)])
        out.dataset("user_embeddings",
                    users.select_columns(["user_id", "vector", "segment_vector"]))
        space = Catalogue(catalogue.item_ids, catalogue.texts,
                          encoder_item_vectors(trained.model()))
        out.table("item_vectors", pa.table({"item_id": space.item_ids,
                                            "vector": to_arrow(space.vectors)}))
    return users, space, training


def data_key(cfg: PipelineConfig) -> str:
    """What the encoder's training data depends on: a resumed run must have the same."""
    d = cfg.to_dict()
    keep = {k: d[k] for k in ("synthetic", "source", "clean", "sequences", "embed")}
    keep["holdout"] = d["eval"]["holdout"]
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()


def planted_agreement(out: ArtifactWriter, truth_path: str) -> dict:
    """Synthetic data: how well the segments found match the planted ones."""
    truth = pq.read_table(truth_path)
    found = out.read("profiles").select(["user_id", "segment"]).join(truth, "user_id")
    return {"ari": round(adjusted_rand_index(found["true_segment"].to_numpy(),
                                             found["segment"].to_numpy()), 4),
            "users": found.num_rows,
            "planted_segments": len(set(truth["true_segment"].to_pylist()))}


def evaluate(out: ArtifactWriter, users, cfg: PipelineConfig) -> dict:
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


def build_manifest(requested, cfg, rows, item_rows, seqs, users, km, timings, metrics,
                   tables, training) -> dict:
    import faiss
    import transformers
    n_users = seqs.count()
    return {
        "raypipe_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": requested.to_dict(), "config_hash": requested.hash(),
        "source": dataclasses.asdict(cfg.source),
        "versions": {"ray": ray.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "faiss": faiss.__version__,
                     "pyarrow": pa.__version__, "numpy": np.__version__},
        "cluster": dict(zip(("cpus", "gpus"), runtime.resources())),
        "rows": rows, "item_rows": item_rows,
        "users": {"with_events": n_users, "profiled": users.count(),
                  "too_short": n_users - users.count()},
        "kmeans": {"n_clusters": int(km.n_clusters), "inertia": float(km.inertia_),
                   "n_iter": int(km.n_iter_)},
        "seconds": dict(timings), "metrics": metrics, "tables": tables,
        **({"encoder": training} if training else {}),
    }
