"""The manifest: what a run read, kept, made and measured, with the versions that made it.
Written last, so a folder with a manifest is a complete run."""
from __future__ import annotations

import dataclasses
import time

from raypipe import __version__


def versions() -> dict:
    from importlib.metadata import version

    import faiss
    import numpy as np
    import pyarrow as pa
    import torch
    import transformers
    return {"ray": version("ray"), "torch": torch.__version__,
            "transformers": transformers.__version__, "faiss": faiss.__version__,
            "pyarrow": pa.__version__, "numpy": np.__version__}


def build_manifest(requested, cfg, s: dict, timings: dict, tables: dict, stages: dict,
                   cluster: tuple[int, int]) -> dict:
    """The run's config (as asked and as run), its stages' infos (`s`: name -> Stage), the
    timings, the written tables' row counts, the stage store's summary and the cluster's
    (CPUs, GPUs) -> manifest."""
    events, users, outputs = s["events"].info, s["users"].info, s["outputs"].info
    n_users, profiled_users = events["users_with_events"], users["profiled"]
    return {
        "raypipe_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": requested.to_dict(), "config_hash": requested.hash(),
        "source": dataclasses.asdict(cfg.source), "versions": versions(),
        "cluster": dict(zip(("cpus", "gpus"), cluster)),
        "rows": events["rows"], "item_rows": s["items"].info["rows"],
        "users": {"with_events": n_users, "profiled": profiled_users,
                  "too_short": n_users - profiled_users,
                  "user_repr": users.get("user_repr", cfg.user_repr),
                  **({"choice": users["choice"]} if "choice" in users else {})},
        "kmeans": s["segments"].info["kmeans"], "privacy": events["privacy"],
        "item_index": outputs.get("index"), "segment_ids": outputs.get("segment_ids"),
        "blend": outputs.get("blend"), "item_groups": s["item_groups"].info,
        "seconds": dict(timings), "stages": stages, "metrics": outputs["metrics"],
        "tables": tables,
        "embedding": {"items": s["item_embeddings"].info.get("embedding"),
                      **({"sequences": users["embedding"]} if "embedding" in users else {})},
        **{key: s["segments"].info[key] for key in ("sweep", "hierarchy")
           if key in s["segments"].info},
        **({"encoder": users["training"]} if "training" in users else {}),
    }
