"""Training the sequence encoder: next-item prediction at every position, early stopping
on the validation users' NDCG@10. Plain torch; knows nothing about Ray (jobs/training.py
wraps `fit` in Ray Train, supplying `Hooks`).

Leave-one-out splits of a history h (the test target, if any, already removed): for the
users held out for validation (`encoder.validation_share`, a seeded hash of the user id:
recommend.cooccur.held_out), validation asks h[:-1] for h[-1] and training pairs come from
h[:-1] (each item predicts the next); the other users train on all of h.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raypipe.config import EncoderConfig
from raypipe.recommend.metrics import hit_sums
from raypipe.vectors.encoder import PURCHASE, SequenceEncoder, crop

log = logging.getLogger(__name__)


def next_item_loss(states, table, labels, cfg: EncoderConfig, generator=None):
    """Sum of cross-entropies of the next item at every labelled position (labels > 0), over
    the whole catalogue, or over shared uniform negatives for the sampled loss.
    -> (loss sum, number of labelled positions)."""
    keep = labels > 0
    h, y = states[keep], labels[keep] - 1
    items = table[1:]
    if cfg.temperature > 0:     # cosine logits, sharpened
        h, items = F.normalize(h, dim=-1) / cfg.temperature, F.normalize(items, dim=-1)
    sampled = cfg.loss == "sampled" or (cfg.loss == "auto" and len(items) > 100_000)
    if not sampled:
        return F.cross_entropy(h @ items.T, y, reduction="sum"), len(y)
    neg = torch.randint(len(items), (cfg.negatives,), device=h.device, generator=generator)
    logits = torch.cat([(h * items[y]).sum(-1, keepdim=True), h @ items[neg].T], dim=1)
    logits[:, 1:] = logits[:, 1:].masked_fill(neg[None] == y[:, None], float("-inf"))
    return F.cross_entropy(logits, torch.zeros_like(y), reduction="sum"), len(y)


@torch.no_grad()
def rank_metrics(model, items, events, targets, mask_purchased: bool, device, k: int = 10,
                 batch_size: int = 1024) -> np.ndarray:
    """Validation: (n, L) inputs and (n,) target ids -> [sum of NDCG@k, sum of Recall@k, n],
    full ranking over the catalogue, purchased input items left out when asked."""
    model.eval()
    out = np.zeros(3)
    for s in range(0, len(items), batch_size):
        x, e = crop(items[s:s + batch_size], events[s:s + batch_size])
        x, e = torch.as_tensor(x, device=device), torch.as_tensor(e, device=device)
        y = torch.as_tensor(targets[s:s + batch_size], device=device)
        states, table = model(x, e)
        scores = model.scoring(states[:, -1]) @ model.scoring(table).T
        scores[:, 0] = -torch.inf
        if mask_purchased:
            hidden = torch.where(e == PURCHASE, x, torch.zeros_like(x))
            target_score = scores.gather(1, y[:, None])
            scores.scatter_(1, hidden, -torch.inf)
            scores.scatter_(1, y[:, None], target_score)      # a repurchase still counts
        ndcg, hits = hit_sums((scores > scores.gather(1, y[:, None])).sum(1).cpu().numpy(), k)
        out += [ndcg, hits, len(y)]
    model.train()
    return out


def length_batches(lengths: np.ndarray, batch_size: int, rng) -> list[np.ndarray]:
    """Row indices in batches of about equal history length (little padding), in random
    order: a random permutation is cut into windows of 32 batches, each sorted by length."""
    order = rng.permutation(len(lengths))
    window = 32 * batch_size
    batches = []
    for s in range(0, len(order), window):
        chunk = order[s:s + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclass
class Splits:
    """Integer views of the histories for training and validation (see the module doc)."""
    train_items: np.ndarray     # (n_train, W) inputs; labels are the next column
    train_events: np.ndarray
    valid_items: np.ndarray     # (n_valid, W - 1) inputs
    valid_events: np.ndarray
    valid_targets: np.ndarray   # (n_valid,) item ids


def split(items: np.ndarray, events: np.ndarray, held: np.ndarray | None = None) -> Splits:
    """(n, W) encoded histories -> training rows and validation rows.

    `held` (n,) marks the users held out for validation (cooccur.held_out; None: all of
    them); those with at least two items are asked all but their last item -> the last, and
    train on the history minus that item (if two items remain). Every other user trains on
    the whole history, so the model also learns the latest transitions, which are the
    closest to what comes next. Training rows keep the latest event in the last column."""
    length = (items > 0).sum(1)
    held = (np.ones(len(items), bool) if held is None else np.asarray(held, bool)) & (length >= 2)

    def shifted(x: np.ndarray) -> np.ndarray:       # drop the last event, pad on the left
        return np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], axis=1)

    train = np.where(held[:, None], shifted(items), items)
    train_events = np.where(held[:, None], shifted(events), events)
    keep = (train > 0).sum(1) >= 2
    return Splits(train[keep], train_events[keep], items[held, :-1], events[held, :-1],
                  items[held, -1])


@dataclass
class Hooks:
    """How the loop talks to its environment: Ray Train supplies these; the defaults run in
    one process. `reduce` sums an array over workers; `report(metrics, state)` is called
    after every epoch with the full resumable state."""
    rank: int = 0
    world: int = 1
    device: str = "cpu"
    reduce: Callable[[np.ndarray], np.ndarray] = lambda a: a
    report: Callable[[dict, dict], None] = lambda metrics, state: None
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m
    log_every_s: float = 0.0    # the epoch line at most this often (0: every epoch)


def fit(data: Splits, n_items: int, text_vectors: np.ndarray | None, cfg: EncoderConfig,
        max_length: int, *, mask_purchased: bool = True, hooks: Hooks | None = None,
        resume: dict | None = None) -> tuple[dict, dict]:
    """Train on next-item prediction with AdamW, early stopping on validation NDCG@10.
    Every worker sees the same global batches and trains on its slice of each, so the result
    does not depend on the number of workers. -> (best state dict, training summary)."""
    hooks = hooks or Hooks()
    model, opt, st = _start(n_items, text_vectors, cfg, max_length, hooks.device, resume)
    net = hooks.wrap(model)
    lengths = (data.train_items > 0).sum(1)
    logged = -np.inf
    while stop_reason(st, cfg) is None:
        started = time.monotonic()
        sums = _train_epoch(net, opt, data, lengths, cfg, hooks, st["epoch"])
        metrics = _validate(model, data, sums, mask_purchased, hooks, st["epoch"])
        _record(st, metrics, model)
        # rank 0's clock for every worker, so that all stop after the same epoch
        st["seconds"] += float(hooks.reduce(np.array(
            [time.monotonic() - started if hooks.rank == 0 else 0.0]))[0])
        last = stop_reason(st, cfg) is not None
        if hooks.rank == 0 and (last or time.monotonic() - logged >= hooks.log_every_s):
            logged = time.monotonic()
            log.info("encoder epoch %d: loss %.4f, valid NDCG@10 %.4f, Recall@10 %.4f "
                     "(best %.4f at epoch %d)", metrics["epoch"], metrics["train_loss"],
                     metrics["valid_ndcg@10"], metrics["valid_recall@10"], st["best"],
                     st["best_epoch"])
        # the report also says where the run stands: the best so far and, on the last
        # epoch, why it ends (`raypipe tune`'s scheduler and table read these)
        hooks.report({**metrics, "best_valid_ndcg@10": st["best"],
                      "best_epoch": st["best_epoch"], "resumed_from_epoch": st["resumed_from"],
                      "stopped": stop_reason(st, cfg) or ""},
                     {**st, "model": model.state_dict(), "optimizer": opt.state_dict()})
    summary = {"epochs": st["epoch"], "best_epoch": st["best_epoch"],
               "resumed_from_epoch": st["resumed_from"],
               "valid_ndcg@10": st["best"], "history": st["history"],
               "stopped": stop_reason(st, cfg), "train_seconds": round(st["seconds"], 2)}
    return st["best_state"] or model.state_dict(), summary


def _start(n_items: int, text_vectors, cfg: EncoderConfig, max_length: int, device: str,
           resume: dict | None):
    """-> (model, optimizer, loop state), fresh or from a checkpoint's state."""
    torch.manual_seed(cfg.seed)
    model = SequenceEncoder(n_items, text_vectors, cfg, max_length).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    st = {"epoch": 0, "best": -1.0, "best_epoch": 0, "bad": 0, "history": [],
          "best_state": None, "resumed_from": 0, "seconds": 0.0}
    if resume:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        st = {k: resume.get(k, v) for k, v in st.items()}
        st["resumed_from"] = resume["epoch"]
    return model, opt, st


def _train_epoch(net, opt, data: Splits, lengths: np.ndarray, cfg: EncoderConfig,
                 hooks: Hooks, epoch: int) -> np.ndarray:
    """One pass over the training rows -> [loss sum, labelled positions] of this worker."""
    torch.manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + hooks.rank)
    batches = length_batches(lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]))
    # Each labelled position weighs the same whatever its batch: DDP averages gradients
    # over workers, so a worker's share is scaled by the number of workers.
    scale = hooks.world * len(batches) / max(int((lengths - 1).sum()), 1)
    sums = np.zeros(2)
    for rows in batches:
        x, e = crop(data.train_items[rows], data.train_events[rows])
        x, e = x[hooks.rank::hooks.world], e[hooks.rank::hooks.world]
        x, e = torch.as_tensor(x, device=hooks.device), torch.as_tensor(e, device=hooks.device)
        labels = torch.where(x[:, :-1] > 0, x[:, 1:], torch.zeros_like(x[:, 1:]))
        states, table = net(x[:, :-1], e[:, :-1])
        loss, count = next_item_loss(states, table, labels, cfg)
        (loss * scale).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sums += [loss.item(), count]
    return sums


def _validate(model, data: Splits, sums: np.ndarray, mask_purchased: bool, hooks: Hooks,
              epoch: int) -> dict:
    """-> the epoch's metrics, summed over the workers."""
    part = slice(hooks.rank, None, hooks.world)
    ndcg, recall, count = hooks.reduce(rank_metrics(
        model, data.valid_items[part], data.valid_events[part], data.valid_targets[part],
        mask_purchased, hooks.device))
    sums = hooks.reduce(sums)
    return {"epoch": epoch + 1, "train_loss": round(float(sums[0] / max(sums[1], 1)), 4),
            "valid_ndcg@10": round(float(ndcg / max(count, 1)), 5),
            "valid_recall@10": round(float(recall / max(count, 1)), 5)}


def stop_reason(st: dict, cfg: EncoderConfig) -> str | None:
    """Why training ends now: early (patience), max_epochs, time_budget; None: go on.
    The budget counts the epochs' time over every resumption."""
    if st["bad"] >= cfg.patience:
        return "early"
    if st["epoch"] >= cfg.epochs:
        return "max_epochs"
    if cfg.max_minutes and st["seconds"] >= cfg.max_minutes * 60:
        return "time_budget"
    return None


def _record(st: dict, metrics: dict, model) -> None:
    """The loop state after an epoch: its history, the best state, epochs without gain."""
    st["epoch"] = metrics["epoch"]
    st["history"].append(metrics)
    if metrics["valid_ndcg@10"] > st["best"]:
        st.update(best=metrics["valid_ndcg@10"], best_epoch=metrics["epoch"], bad=0,
                  best_state=copy.deepcopy(model.state_dict()))
    else:
        st["bad"] += 1
