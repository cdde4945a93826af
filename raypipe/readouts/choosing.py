"""The report's sections on how the segments were chosen and how they hold up: the number of
segments (kmeans.n_clusters=auto: one chart per criterion of the sweep, the chosen K
marked), how much K-means restarts agree, and segment ids across runs."""
from __future__ import annotations

from raypipe.readouts.charts import esc, line_chart, table

CHARTS = (("silhouette", "silhouette (higher is better)"),
          ("calinski_harabasz", "Calinski-Harabasz (higher is better)"),
          ("davies_bouldin", "Davies-Bouldin (lower is better)"),
          ("stability", "stability: ARI between resampled fits"),
          ("inertia", "inertia (within-segment squared distance)"))


def section(manifest: dict, sweep_rows: list[dict] | None) -> str:
    km = manifest.get("kmeans") or {}
    restarts = km.get("restarts") or {}
    lines = []
    if restarts.get("n_init", 1) > 1:
        finest = (manifest.get("hierarchy") or {}).get("levels", [None])[-1]
        at = f" (at the hierarchy's finest level, {finest} segments)" if finest else ""
        lines.append(f"<p>{restarts['n_init']} K-means restarts{at}: inertia spread "
                     f"{restarts['inertia_spread']:.2%} between the best and the worst, mean "
                     f"agreement between restarts (adjusted Rand index) "
                     f"{restarts['mean_ari']:.3f}; the best restart is kept.</p>")
    sweep = manifest.get("sweep")
    if not sweep or not sweep_rows:
        text = "".join(lines) or (f"<p>The number of segments, {km.get('n_clusters')}, was "
                                  f"set in the configuration (kmeans.n_clusters).</p>")
        return f"<section id='choosing'><h2>Number of segments</h2>{text}</section>"
    k = [r["k"] for r in sweep_rows]
    charts = "".join(line_chart(k, [r[c] for r in sweep_rows], title, sweep["chosen_k"])
                     for c, title in CHARTS)
    rows = [[r["k"], f"{r['silhouette']:.3f}", f"{r['calinski_harabasz']:.1f}",
             f"{r['davies_bouldin']:.3f}", f"{r['stability']:.3f}",
             "chosen" if r["k"] == sweep["chosen_k"] else ""] for r in sweep_rows]
    return (f"<section id='choosing'><h2>Number of segments</h2><p>K = {sweep['chosen_k']}, "
            f"chosen from K = {sweep['k_range'][0]}..{sweep['k_range'][1]} on "
            f"{sweep['sample_rows']:,} users ({sweep['trials']} K-means fits, "
            f"{sweep['seconds']:.1f} s). Rule: {esc(sweep['rule'])}.</p>"
            + "".join(lines) + f"<div class='grid'>{charts}</div>"
            + table(rows, ["K", "silhouette", "Calinski-Harabasz", "Davies-Bouldin",
                           "stability", ""]) + "</section>")


def ids_section(st: dict) -> str:
    """Segment ids across runs: what they were matched to and how many users moved."""
    if st.get("reference"):
        users = st.get("users") or {}
        text = (f"<p>Matched to the previous run at {esc(st['reference'])} "
                f"(Hungarian matching of centroids). Users in both runs: "
                f"{users.get('users_in_both_runs', 0):,}; share that changed segment: "
                f"{users.get('changed_share')}.</p>")
    else:
        note = st.get("note", "No previous run to match: ids are as K-means numbered them.")
        text = f"<p>{esc(note)}</p>"
    return f"<section id='stability'><h2>Segment ids across runs</h2>{text}</section>"
