"""The report's HTML pieces: escaping, colours, tables and inline SVG charts (bars, a
scatter, a funnel). No data reading."""
from __future__ import annotations

import html

import numpy as np

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
           "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"]
def color(segment: int) -> str:
    return PALETTE[segment % len(PALETTE)]


def esc(value) -> str:
    return html.escape(str(value), quote=True)


# ---- charts (inline SVG) -------------------------------------------------------------------

def bar_chart(labels: list[str], values: list[float], colors: list[str], fmt="{:,.0f}",
              title: str = "", width: int = 720) -> str:
    """Horizontal bars, one per label."""
    row, left, right = 22, 260, 70
    height = row * len(labels) + 30
    top = max(values, default=0) or 1
    scale = (width - left - right) / top
    parts = [f'<svg class="chart" role="img" aria-label="{esc(title)}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}">',
             f'<text x="4" y="14" class="title">{esc(title)}</text>']
    for i, (label, v, c) in enumerate(zip(labels, values, colors)):
        y = 24 + i * row
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">'
                     f'{esc(label[:40])}</text>')
        parts.append(f'<rect x="{left}" y="{y + 2}" width="{max(v * scale, 1):.1f}" '
                     f'height="{row - 6}" fill="{c}"/>')
        parts.append(f'<text x="{left + v * scale + 4:.1f}" y="{y + 14}">'
                     f'{esc(fmt.format(v))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def scatter(points: np.ndarray, segments: np.ndarray, title: str, size: int = 520) -> str:
    """2-D points coloured by segment."""
    pad = 12
    lo, hi = points.min(0), points.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    xy = pad + (points - lo) / span * (size - 2 * pad)
    parts = [f'<svg class="chart map" role="img" aria-label="{esc(title)}" width="{size}" '
             f'height="{size}" viewBox="0 0 {size} {size}">',
             f'<rect width="{size}" height="{size}" fill="#fafafa"/>']
    for (x, y), s in zip(xy.tolist(), segments.tolist()):
        parts.append(f'<circle cx="{x:.1f}" cy="{size - y:.1f}" r="2.2" fill="{color(s)}" '
                     f'fill-opacity="0.7"/>')
    parts.append("</svg>")
    return "".join(parts)


def funnel_chart(segment_rates: list[float], population_rates: list[float], c: str,
                 title: str) -> str:
    """The segment's step rates (click/view, cart/click, purchase/cart) beside the
    population's (grey)."""
    steps = ["view→click", "click→cart", "cart→purchase"]
    width, row = 420, 34
    height = 24 + row * len(steps)
    parts = [f'<svg class="chart" role="img" aria-label="{esc(title)}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}">',
             f'<text x="4" y="14" class="title">{esc(title)}</text>']
    for i, (name, s, p) in enumerate(zip(steps, segment_rates, population_rates)):
        y = 22 + i * row
        parts.append(f'<text x="110" y="{y + 16}" text-anchor="end">{name}</text>')
        parts.append(f'<rect x="116" y="{y + 2}" width="{max(s, 0) * 240:.1f}" height="12" '
                     f'fill="{c}"/>')
        parts.append(f'<rect x="116" y="{y + 16}" width="{max(p, 0) * 240:.1f}" height="8" '
                     f'fill="#bbb"/>')
        parts.append(f'<text x="{122 + max(s, p, 0) * 240:.1f}" y="{y + 16}">'
                     f'{s:.1%} (all {p:.1%})</text>')
    parts.append("</svg>")
    return "".join(parts)


# ---- what the charts show -----------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1100px;color:#222;padding:0 16px}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
.meta{color:#666} table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}
th{background:#f4f4f4} .segment{border:1px solid #e4e4e4;border-radius:6px;padding:12px 16px;
margin:16px 0} .swatch{display:inline-block;width:14px;height:14px;border-radius:3px;
margin-right:6px;vertical-align:middle} .chart text{font-size:12px;fill:#333}
.chart .title{font-weight:600} .grid{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.terms span{background:#eef;border-radius:3px;padding:1px 6px;margin:2px;display:inline-block}
.diff{color:#555}
"""


def table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "–"


def line_chart(xs: list[float], ys: list[float], title: str, mark: float | None = None,
               width: int = 340, height: int = 200) -> str:
    """y against x as a line with dots; a dashed vertical line at x = `mark`."""
    left, right, top, bottom = 48, 12, 22, 26
    ok = [(x, y) for x, y in zip(xs, ys) if np.isfinite(y)]
    if not ok:
        return ""
    x0, x1 = min(x for x, _ in ok), max(x for x, _ in ok)
    y0, y1 = min(y for _, y in ok), max(y for _, y in ok)
    sx = (width - left - right) / ((x1 - x0) or 1)
    sy = (height - top - bottom) / ((y1 - y0) or 1)
    px = lambda x: left + (x - x0) * sx                      # noqa: E731
    py = lambda y: height - bottom - (y - y0) * sy           # noqa: E731
    parts = [f'<svg class="chart" role="img" aria-label="{esc(title)}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}">',
             f'<text x="4" y="14" class="title">{esc(title)}</text>',
             f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{y1:.3g}</text>',
             f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">{y0:.3g}</text>',
             f'<text x="{left}" y="{height - 8}">{x0:g}</text>',
             f'<text x="{width - right}" y="{height - 8}" text-anchor="end">{x1:g}</text>']
    if mark is not None:
        parts.append(f'<line x1="{px(mark):.1f}" x2="{px(mark):.1f}" y1="{top}" '
                     f'y2="{height - bottom}" stroke="#d62728" stroke-dasharray="4 3"/>'
                     f'<text x="{px(mark) + 3:.1f}" y="{top + 8}" fill="#d62728">'
                     f'K={mark:g}</text>')
    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in ok)
    parts.append(f'<polyline points="{points}" fill="none" stroke="#1f77b4"/>')
    parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="#1f77b4"/>'
              for x, y in ok]
    parts.append("</svg>")
    return "".join(parts)
