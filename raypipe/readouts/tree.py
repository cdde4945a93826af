"""The report's segment hierarchy (kmeans.levels): the tree drawn as rows of boxes, one row
per level (coarse at the top), each node as wide as its share of the users and under its
parent, with its name; then every node's name, size and top items as a nested list. No data
reading: it takes the rows of `segments` (every level) and the manifest's hierarchy."""
from __future__ import annotations

from raypipe.readouts.charts import color, esc

WIDTH, ROW, BOX, LABELLED = 960, 74, 34, 16     # nodes get a written name at levels <= 16


def layout(rows: list[dict], levels: list[int]) -> dict:
    """-> {(level, segment): (x0, x1)} in [0, 1], children inside their parent, siblings in
    id order."""
    by_level = {lv: sorted((r for r in rows if r["level"] == lv), key=lambda r: r["segment"])
                for lv in levels}
    total = sum(r["size"] for r in by_level[levels[0]]) or 1
    spans, start = {}, 0.0
    for r in by_level[levels[0]]:
        spans[(levels[0], r["segment"])] = (start, start + r["size"] / total)
        start += r["size"] / total
    for upper, lower in zip(levels, levels[1:]):
        cursor = {s: spans[(upper, s)][0] for s in range(upper)}
        for r in by_level[lower]:
            x0 = cursor[r["parent"]]
            cursor[r["parent"]] = x0 + r["size"] / total
            spans[(lower, r["segment"])] = (x0, x0 + r["size"] / total)
    return spans


def svg(rows: list[dict], levels: list[int], main: int) -> str:
    spans = layout(rows, levels)
    by_key = {(r["level"], r["segment"]): r for r in rows}
    height = ROW * len(levels) + 10
    parts = [f'<svg class="chart" role="img" aria-label="segment tree" width="{WIDTH}" '
             f'height="{height}" viewBox="0 0 {WIDTH} {height}">']
    for j, level in enumerate(levels):
        y = 8 + j * ROW
        parts.append(f'<text x="2" y="{y + BOX / 2 + 4}" class="title">{level}</text>')
        for s in range(level):
            r, (x0, x1) = by_key[(level, s)], spans[(level, s)]
            left, w = 40 + x0 * (WIDTH - 44), max((x1 - x0) * (WIDTH - 44) - 1, 1)
            if j:
                px0, px1 = spans[(levels[j - 1], r["parent"])]
                px = 40 + (px0 + px1) / 2 * (WIDTH - 44)
                parts.append(f'<line x1="{px:.1f}" y1="{y - ROW + BOX + 8}" '
                             f'x2="{left + w / 2:.1f}" y2="{y}" stroke="#999"/>')
            stroke = ' stroke="#000" stroke-width="2"' if level == main else ""
            parts.append(f'<rect x="{left:.1f}" y="{y}" width="{w:.1f}" height="{BOX}" '
                         f'fill="{color(s)}" fill-opacity="0.75"{stroke}><title>'
                         f'{esc(_label(r))}</title></rect>')
            if level <= LABELLED and w > 40:
                parts.append(f'<text x="{left + 3:.1f}" y="{y + 14}" font-size="11">'
                             f'{esc(_short(r, w))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _label(r: dict) -> str:
    return f"level {r['level']}, segment {r['segment']}: {r['name']} ({r['size']:,} users)"


def _short(r: dict, width: float) -> str:
    text = f"{r['segment']}: {r['name']}"
    chars = int(width / 6.2)
    return text if len(text) <= chars else text[:max(chars - 1, 1)] + "…"


def outline(rows: list[dict], levels: list[int], main: int) -> str:
    """Every node as a nested list: name, users, representative items; open down to the
    main level."""
    children: dict = {}
    for r in rows:
        children.setdefault((r["level"], r["parent"]), []).append(r)
    finer = dict(zip(levels, levels[1:]))

    def node(r: dict) -> str:
        kids = sorted(children.get((finer.get(r["level"]), r["segment"]), []),
                      key=lambda k: k["segment"])
        items = ", ".join(esc(t[:60]) for t in r["top_item_texts"][:3])
        head = (f"<b>{r['level']}·{r['segment']}</b> {esc(r['name'])} "
                f"<span class='meta'>{r['size']:,} users · {items}</span>")
        if not kids:
            return f"<li>{head}</li>"
        opened = " open" if r["level"] < main else ""
        return (f"<li><details{opened}><summary>{head}</summary><ul>"
                + "".join(node(k) for k in kids) + "</ul></details></li>")
    top = sorted((r for r in rows if r["level"] == levels[0]), key=lambda r: r["segment"])
    return "<ul class='tree'>" + "".join(node(r) for r in top) + "</ul>"


def section(rows: list[dict], hierarchy: dict | None) -> str:
    """The hierarchy section, or nothing for flat segments."""
    if not hierarchy:
        return ""
    levels, main = hierarchy["levels"], hierarchy["main_level"]
    per = hierarchy["per_level"]
    inertia = ", ".join(f"{lv}: {per[str(lv)]['inertia']:,.1f}" for lv in levels)
    return ("<section id='hierarchy'><h2>Segment hierarchy</h2>"
            f"<p>{levels[-1]} micro-segments (K-means) and a tree over them "
            f"({esc(hierarchy['tree'])}); each row is a level, each box a segment as wide as "
            f"its share of the users, under its parent. The outlined row, {main} segments, "
            f"is the one the profiles' <code>segment</code> column and the recommendations "
            f"use; <code>levels</code> in the profiles holds every level. Users' squared "
            f"distance to their segment's centre, per level: {inertia}.</p>"
            + svg(rows, levels, main) + outline(rows, levels, main) + "</section>")
