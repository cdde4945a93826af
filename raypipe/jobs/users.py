"""The users stage: sequences -> user vectors, a map over the user dataset around the plain
`UserModel` (vectors/users.py), with the text model's actor pool for `text` users and Ray
Train for the encoder (jobs/training.py)."""
from __future__ import annotations

import logging
import os

import numpy as np
import pyarrow as pa
import ray
from ray.data.expressions import col

from raypipe.arrays import to_arrow, to_numpy
from raypipe.config import EmbedConfig, EncoderConfig, RecommendConfig, UserConfig
from raypipe.jobs.catalogue import Catalogue
from raypipe.jobs.embedding import embed_texts
from raypipe.jobs.items import catalogue_table, text_vectors
from raypipe.jobs.runtime import USER_BATCH, fetch, read_dataset
from raypipe.jobs.recommendations import count_followers, validation_users
from raypipe.jobs.training import fit_encoder
from raypipe.recommend import blend
from raypipe.recommend.choice import Candidate, choose
from raypipe.recommend.cooccur import Followers
from raypipe.run.artifacts import Folder
from raypipe.run.stages import Runtime, Stage
from raypipe.vectors.encoder import TrainedEncoder
from raypipe.vectors.pooling import history_rows
from raypipe.vectors.users import UserModel

log = logging.getLogger("raypipe")


def histories(batch: pa.Table, catalogue: Catalogue) -> tuple[list[np.ndarray], list]:
    """A batch of user sequences -> (per user catalogue rows, per user event types)."""
    return history_rows(batch["item_ids"], catalogue.index()), batch["event_types"].to_pylist()


def _vectors(batch: pa.Table, catalogue, model) -> pa.Table:
    cat, users = fetch(catalogue[0]), fetch(model[0])
    for name, vectors in users.stored(users.encode(*histories(batch, cat))).items():
        batch = batch.append_column(name, to_arrow(vectors))
    return batch


def _render(batch: pa.Table, catalogue, model) -> pa.Table:
    cat, users = fetch(catalogue[0]), fetch(model[0])
    return batch.append_column("sequence_text",
                               pa.array(users.texts(*histories(batch, cat)), pa.string()))


def profiled(seqs):
    """The users that get vectors and profiles: all but the too-short ones."""
    return seqs.filter(expr=col("too_short") == False)  # noqa: E712 (an expression)


def user_vectors(users, catalogue_ref, model_ref, embed_cfg):
    """Profiled users' sequences -> (the same rows plus the UserModel's stored vector columns
    (lazy: write it once, it is not materialized), how texts were embedded or None).
    `text` users' sequences are rendered and embedded by the text model's actor pool
    (`embed_cfg`)."""
    kwargs = {"catalogue": catalogue_ref, "model": model_ref}
    if not ray.get(model_ref[0]).needs_texts:
        return users.map_batches(_vectors, batch_size=USER_BATCH, batch_format="pyarrow",
                                 fn_kwargs=kwargs), None
    rendered = users.map_batches(_render, batch_size=USER_BATCH, batch_format="pyarrow",
                                 fn_kwargs=kwargs)
    return embed_texts(rendered, "sequence_text", embed_cfg, embed_cfg.sequence_max_length)


def catalogue_of(items: Stage, embeddings: Stage) -> Catalogue:
    """The catalogue with the text model's vectors."""
    table = catalogue_table(items)
    return Catalogue(table["item_id"].to_pylist(), table["text"].to_pylist(),
                     text_vectors(embeddings))


def users_stage(out: Folder, events: Stage, items: Stage, embeddings: Stage, user_repr: str,
                user: UserConfig, rt: Runtime, embed: EmbedConfig | None = None,
                encoder: EncoderConfig | None = None, width: int = 0,
                mask_purchased: bool = True, choice: RecommendConfig | None = None) -> dict:
    """Sequences -> `_users` (profiled users' sequences and vectors), `user_embeddings` and,
    with an `encoder` section (vectors.users.model_sections), the trained `encoder.pt` and
    its `item_vectors`. The training run is named after the keys of the stages it reads, so
    a re-run resumes only on the same data. With `choice` (encoder.compare_pooled), the
    encoder is kept only where it beats pooled text vectors on the validation users
    (recommend/choice.py); else the stage's vectors are pooled ones, `user_repr` in what it
    returns says which."""
    seqs = profiled(read_dataset(events.folder, "sequences"))
    catalogue = catalogue_of(items, embeddings)
    catalogue_ref, trained, info = [ray.put(catalogue)], None, {}
    if encoder is not None:
        with rt.timed("encoder"):
            storage = encoder.storage or f"{rt.output.rstrip('/')}.train"
            trained, info["training"] = fit_encoder(
                seqs, catalogue, catalogue_ref, encoder, width, mask_purchased,
                storage if "://" in storage else os.path.abspath(storage),
                f"{events.key}-{embeddings.key}", fresh=rt.force,
                tracking=rt.tracker.handle if rt.tracker else None)
        if choice is not None:
            with rt.timed("choice"):
                info["choice"] = compare_pooled(seqs, catalogue, catalogue_ref, trained, user,
                                                choice, encoder)
            log.info("users: kept %s vectors: %s", info["choice"]["kept"],
                     info["choice"]["why"])
        # kept in the stage even where pooled vectors won: the artifacts get it only when
        # it is the run's model (pipeline.assemble)
        out.bytes("encoder.pt", trained.to_bytes())
        if choice is not None and info["choice"]["kept"] == "pooled":
            user_repr, trained = "pooled", None
    model = UserModel(user_repr, user, None, catalogue.vectors, catalogue.texts, trained)
    with rt.timed("user_embeddings"):
        vectors, embedding = user_vectors(seqs, catalogue_ref, [ray.put(model)], embed)
        out.dataset("_users", vectors)
        out.dataset("user_embeddings", read_dataset(out, "_users").select_columns(
            ["user_id", *model.stored_columns]))
        if trained is not None:
            out.table("item_vectors", pa.table({"item_id": catalogue.item_ids,
                                                "vector": to_arrow(model.item_space())}))
    return {"profiled": out.tables["_users"], "segment_column": model.segment_column,
            "user_repr": user_repr, **info, **({"embedding": embedding} if embedding else {})}


def compare_pooled(seqs, catalogue: Catalogue, catalogue_ref, trained: TrainedEncoder,
                   user: UserConfig, r: RecommendConfig, encoder: EncoderConfig) -> dict:
    """The trained encoder against pooled text vectors on the validation users (the share
    blend's fit asks, co-occurrence counted without their last items) -> choice.choose's
    verdict."""
    n_users = seqs.count()
    share = blend.fit_share(encoder.validation_share, n_users)
    val = validation_users(seqs, share, encoder.seed)
    if val.num_rows == 0:
        return {"kept": "encoder", "users": 0,
                "why": "no validation user has two items: nothing to compare on"}
    pairs = count_followers(seqs, catalogue_ref, r.cooccurrence_window, share, encoder.seed,
                            n_users)
    followers = Followers.from_pairs(pairs, len(catalogue.item_ids), r.cooccurrence_top,
                                     validation=True)
    encoded = UserModel("encoder", user, r.query_half_life, catalogue.vectors,
                        catalogue.texts, trained)
    candidates = {   # pooled first: it is kept on a tie
        "pooled": Candidate(UserModel("pooled", user, r.query_half_life, catalogue.vectors,
                                      catalogue.texts), catalogue.vectors),
        "encoder": Candidate(encoded, encoded.item_space())}
    return choose(candidates, val, catalogue, followers, r)


def load_user_model(users: Stage, items: Stage, embeddings: Stage, user_repr: str,
                    user: UserConfig, query_half_life: float) -> tuple[UserModel, Catalogue]:
    """A finished users stage -> (its UserModel, the catalogue in the space items are
    ranked in: the encoder's item vectors for encoder users, else the text vectors)."""
    catalogue = catalogue_of(items, embeddings)
    kept = users.info.get("user_repr", user_repr)      # pooled where they beat the encoder
    trained = TrainedEncoder.from_bytes(users.folder.read_bytes("encoder.pt"),
                                        catalogue.vectors) \
        if kept == "encoder" and users.folder.exists("encoder.pt") else None
    model = UserModel(kept, user, query_half_life, catalogue.vectors, catalogue.texts, trained)
    if users.folder.exists("item_vectors.parquet"):
        vectors = users.folder.read("item_vectors")
        assert vectors["item_id"].to_pylist() == catalogue.item_ids, \
            "item_vectors do not match the catalogue"
        catalogue = Catalogue(catalogue.item_ids, catalogue.texts, to_numpy(vectors["vector"]))
    return model, catalogue
