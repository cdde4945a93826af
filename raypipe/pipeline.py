"""The batch job, stage by stage: catalogue -> clean events and sequences -> item embeddings
-> user vectors (encoder training or pooling) -> segments -> profiles, recommendations and
metrics. Each stage (jobs/) is resumable (run/stages.py): it is handed its config sections
and the stages it reads, and its key is derived from exactly those. The output folder
appears only when every stage has finished, assembled from the stages' tables without
copying them (run/artifacts.py)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os

from raypipe.config import PipelineConfig, SourceConfig
from raypipe.events import sources, synthetic
from raypipe.jobs import runtime
from raypipe.jobs.ingest import events_stage
from raypipe.jobs.items import embeddings_stage, groups_stage, items_stage
from raypipe.jobs.outputs import outputs_stage
from raypipe.jobs.segments import segments_stage
from raypipe.jobs.users import users_stage
from raypipe.run.artifacts import MANIFEST, clear_leftovers
from raypipe.run.lock import OutputLock
from raypipe.run.manifest import build_manifest
from raypipe.run.privacy import pseudonymizer
from raypipe.run.stages import InputFiles, Runtime, StageStore
from raypipe.run.tracking import Tracker
from raypipe.run.versions import ArtifactWriter
from raypipe.vectors.users import model_sections, training_sections

log = logging.getLogger("raypipe")


def run(cfg: PipelineConfig, force: bool = False) -> dict:
    """Run every stage, reusing the ones an earlier run of the same inputs finished
    (`force` redoes them all); return the manifest of the written artifacts."""
    with OutputLock(cfg.output, "run"):
        return _run(cfg, force)


def _run(cfg: PipelineConfig, force: bool) -> dict:
    runtime.start(cfg.address, cfg.num_cpus)
    requested, (cfg, truth) = cfg, prepare_source(cfg)
    for path in clear_leftovers(cfg.output):
        log.info("deleted %s, left by an interrupted run", path)
    rt = Runtime(requested.output, {}, force, Tracker.open(cfg.tracking, requested.output))
    store = StageStore(cfg.output, rt.timings, force)
    out = ArtifactWriter(cfg.output)
    try:
        s = stages(cfg, requested, store, rt, truth)
        assemble(out, s)
        manifest = json.loads(json.dumps(build_manifest(
            requested, cfg, s, rt.timings, out.tables, store.summary(), runtime.resources()),
            default=str))                  # exactly what the file will hold
        out.json(MANIFEST, manifest)
        out.commit()
    except BaseException:
        out.abort()
        if rt.tracker:
            rt.tracker.finish(None)
        raise
    store.prune()
    if rt.tracker:
        rt.tracker.finish(manifest, reused_encoder=s["users"].reused)
    return manifest


def stages(cfg: PipelineConfig, requested: PipelineConfig, store: StageStore, rt: Runtime,
           truth: str | None) -> dict:
    """The stages in order, each handed what it reads -> {stage name: Stage}."""
    items, events, embeddings = input_stages(cfg, store, rt)
    groups = store.run("item_groups", groups_stage, item_groups=cfg.item_groups, items=items,
                       embeddings=embeddings, rt=rt)
    users = store.run("users", users_stage, events=events, items=items, embeddings=embeddings,
                      rt=rt, **model_sections(cfg), **training_sections(cfg))
    segments = store.run("segments", segments_stage, kmeans=cfg.kmeans, users=users, rt=rt,
                         previous=requested.output)
    outputs = store.run("outputs", outputs_stage, items=items, embeddings=embeddings,
                        groups=groups, users=users, segments=segments, profiles=cfg.profiles,
                        recommend=cfg.recommend, evaluation=cfg.eval, truth=truth, rt=rt,
                        validation_share=cfg.encoder.validation_share, seed=cfg.encoder.seed,
                        **model_sections(cfg))
    return {s.name: s for s in (items, events, embeddings, groups, users, segments, outputs)}


def input_stages(cfg: PipelineConfig, store: StageStore, rt: Runtime) -> tuple:
    """The stages every user model reads -> (items, events, item_embeddings): the
    catalogue, the cleaned events and sequences, the items' text vectors. `raypipe tune`
    runs these alone, into the same store, so a later `raypipe run` reuses them."""
    items = store.run("items", items_stage, source=cfg.source, clean=cfg.clean, rt=rt,
                      files=InputFiles.plan(sources.plan_items, cfg.source))
    events = store.run("events", events_stage, source=cfg.source, clean=cfg.clean,
                       sequences=cfg.sequences, holdout=cfg.eval.holdout == "last",
                       files=InputFiles.plan(sources.plan_events, cfg.source), items=items,
                       pseudonymizer=pseudonymizer(cfg.privacy.pseudonymize), rt=rt,
                       cold=(cfg.eval.cold_share, cfg.eval.cold_seed) if cfg.eval.cold_share
                       else None)
    embeddings = store.run("item_embeddings", embeddings_stage, embed=cfg.embed, items=items,
                           rt=rt)
    return items, events, embeddings


def assemble(out: ArtifactWriter, s: dict) -> None:
    """The stages' public tables (names without `_`) and the encoder into the artifacts."""
    for name, stage in s.items():
        for table in stage.folder.tables:
            if table.startswith("_"):
                continue
            # `quarantine` gathers the items' and the events' bad rows: keep names apart
            prefix = f"{name}-" if table == "quarantine" else ""
            out.link_table(stage.folder, table, prefix=prefix)
    if s["users"].info.get("user_repr", "encoder") == "encoder" and \
            s["users"].folder.exists("encoder.pt"):
        out.bytes("encoder.pt", s["users"].folder.read_bytes("encoder.pt"))
    if s["outputs"].info["metrics"]:
        out.json("metrics.json", s["outputs"].info["metrics"])


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
