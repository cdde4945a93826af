"""The summary table printed at the end of a run, from its manifest."""
from __future__ import annotations


def render(m: dict) -> str:
    rows, users = m["rows"], m["users"]
    lines = [f"raypipe {m['raypipe_version']} -> {m['config']['output']}",
             f"rows       read {rows['read']:,}  kept {rows['kept']:,}  "
             f"quarantined {rows['quarantined']:,}",
             *[f"           - {reason}: {n:,}" for reason, n in rows["reasons"].items()],
             f"items      read {m['item_rows']['read']:,}  kept {m['item_rows']['kept']:,}",
             f"users      {users['profiled']:,} profiled ({users['too_short']:,} too short)",
             f"segments   {m['kmeans']['n_clusters']} (inertia {m['kmeans']['inertia']:.2f}, "
             f"{m['kmeans']['n_iter']} iterations)"]
    ids = m.get("segment_ids") or {}
    if ids.get("reference"):
        changed = (ids.get("users") or {}).get("changed_share")
        lines.append(f"segment ids kept from {ids['reference']}"
                     + (f" ({changed:.1%} of the users in both runs changed segment)"
                        if changed is not None else ""))
    elif ids.get("note"):
        lines.append(f"segment ids {ids['note']}")
    index = m.get("item_index") or {}
    if index.get("kind") == "ivf":
        lines.append(f"item index IVF, {index['probe']} of {index['lists']} lists searched: "
                     f"recall@k {index['recall_vs_exact']:.3f} of exact search "
                     f"({index['users_checked']:,} users)")
    enc = m.get("encoder")
    if enc:
        lines.append(f"encoder    {enc['epochs']} epochs on {enc['workers']} {enc['device']} "
                     f"worker(s), best epoch {enc['best_epoch']} (valid NDCG@10 "
                     f"{enc['valid_ndcg@10']:.4f}), {enc['seconds_per_epoch']:.1f} s/epoch"
                     + (f", resumed after epoch {enc['resumed_from_epoch']}"
                        if enc['resumed_from_epoch'] else ""))
    choice = (m.get("users") or {}).get("choice")
    if choice:
        lines.append(f"kept       {choice['kept']} user vectors: {choice['why']}")
    planted = (m.get("metrics") or {}).get("planted")
    if planted:
        lines.append(f"planted    ARI {planted['ari']:.3f} between segments found and the "
                     f"{planted['planted_segments']} planted ones ({planted['users']:,} users)")
    strategies = (m.get("metrics") or {}).get("strategies", {})
    if strategies:
        ks = sorted({int(k.split("@")[1]) for s in strategies.values() for k in s if "@" in k})
        head = "".join(f"{f'Recall@{k}':>11}{f'NDCG@{k}':>10}" for k in ks)
        lines.append(f"metrics    {'strategy':<14}{head}")
        lines += _rows(strategies, ks)
        cold = m["metrics"].get("cold_targets")
        if cold:
            users = next(iter(cold["strategies"].values()), {}).get("users", 0)
            lines.append(f"cold       {cold['items']:,} items held out as cold; the "
                         f"{users:,} users whose test item is one:")
            lines += _rows(cold["strategies"], ks)
    secs = m["seconds"]
    lines.append("seconds    " + "  ".join(f"{k} {v:.1f}" for k, v in secs.items()) +
                 f"  | total {sum(secs.values()):.1f}")
    return "\n".join(lines)


def _rows(strategies: dict, ks: list) -> list[str]:
    return [f"           {name:<14}" + "".join(f"{s[f'recall@{k}']:>11.4f}"
                                                f"{s[f'ndcg@{k}']:>10.4f}" for k in ks)
            for name, s in strategies.items()]
