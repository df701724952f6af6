"""Dependency-free SVG charts for the build report (a person would rather look than read)."""

from __future__ import annotations

from html import escape

_COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")


def _frame(width: int, height: int, title: str, body: list[str]) -> str:
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>',
        *body, "</svg>", ""])


def accuracy_size_chart(models: list[dict]) -> str:
    """Horizontal bars: test accuracy per model, labelled with its file size."""
    rows = [m for m in models if m.get("accuracy") is not None]
    left, bar_h, gap, width = 150, 22, 10, 640
    height = 40 + len(rows) * (bar_h + gap) + 20
    span = width - left - 150
    body = []
    for i, m in enumerate(rows):
        y = 34 + i * (bar_h + gap)
        w = max(1.0, span * m["accuracy"])
        size = m["size_bytes"] / 1024
        size_text = f"{size:.0f} KiB" if size < 1024 else f"{size / 1024:.2f} MiB"
        body += [
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{escape(m["name"])}</text>',
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{_COLORS[i % len(_COLORS)]}"/>',
            f'<text x="{left + w + 6:.1f}" y="{y + 15}">{m["accuracy"] * 100:.2f} %  ·  {size_text}</text>',
        ]
    return _frame(width, height, "Test accuracy and file size", body)


def training_curves_chart(curves: dict[str, list[float]], ylabel: str = "validation accuracy") -> str:
    """One line per series (e.g. teacher / student validation accuracy per epoch)."""
    width, height, left, right, top, bottom = 640, 320, 60, 130, 30, 40
    series = {k: v for k, v in curves.items() if v}
    values = [x for v in series.values() for x in v]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    lo, hi = max(0.0, lo - 0.02), min(1.0, hi + 0.02) if hi > lo else lo + 0.1
    longest = max((len(v) for v in series.values()), default=1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (plot_w * i / max(1, longest - 1))
        y = top + plot_h * (1 - (v - lo) / (hi - lo))
        return x, y

    body = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#333"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>',
            f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">epoch</text>',
            f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" '
            f'text-anchor="middle">{escape(ylabel)}</text>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        _, y = xy(0, v)
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v * 100:.0f}%</text>')
    step = max(1, longest // 10)  # at most ~10 epoch labels
    for i in range(0, longest, step):
        x, _ = xy(i, lo)
        body.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{i + 1}</text>')
    for j, (name, vals) in enumerate(series.items()):
        color = _COLORS[j % len(_COLORS)]
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in enumerate(vals)))
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        body.append(f'<text x="{left + plot_w + 8}" y="{top + 16 + 18 * j}" fill="{color}">{escape(name)} '
                    f'({vals[-1] * 100:.1f}%)</text>')
    return _frame(width, height, "Training progress", body)


def pareto_best(points: list[tuple[str, float, float]]) -> set[str]:
    """Names of the points no other point beats on both cost (lower) and accuracy (higher):
    the variants worth choosing among; every other one has a better alternative."""
    best = set()
    for name, cost, acc in points:
        if not any((c <= cost and a >= acc) and (c < cost or a > acc) for _, c, a in points):
            best.add(name)
    return best


def _scatter_panel(x0: int, points: list[tuple[str, float, float]], xlabel: str, lo: float, hi: float,
                   panel_w: int = 300, top: int = 40, plot_h: int = 240) -> list[str]:
    """One accuracy-against-cost panel, best points (:func:`pareto_best`) ringed and labelled."""
    costs = [c for _, c, _ in points]
    cmin, cmax = min(costs), max(costs)
    span = (cmax - cmin) or max(cmax, 1e-9)
    best = pareto_best(points)

    def xy(cost: float, acc: float) -> tuple[float, float]:
        return (x0 + 10 + (panel_w - 20) * ((cost - cmin) / span if cmax > cmin else 0.5),
                top + plot_h * (1 - (acc - lo) / (hi - lo)))

    body = [f'<line x1="{x0}" y1="{top + plot_h}" x2="{x0 + panel_w}" y2="{top + plot_h}" stroke="#333"/>',
            f'<line x1="{x0}" y1="{top}" x2="{x0}" y2="{top + plot_h}" stroke="#333"/>',
            f'<text x="{x0 + panel_w / 2}" y="{top + plot_h + 32}" text-anchor="middle">{escape(xlabel)}</text>',
            f'<text x="{x0 + 2}" y="{top + plot_h + 16}">{cmin:.3g}</text>',
            f'<text x="{x0 + panel_w}" y="{top + plot_h + 16}" text-anchor="end">{cmax:.3g}</text>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        body.append(f'<text x="{x0 - 4}" y="{xy(cmin, v)[1] + 4:.1f}" text-anchor="end">{v * 100:.0f}%</text>')
    for i, (name, cost, acc) in enumerate(points):
        x, y = xy(cost, acc)
        color = _COLORS[i % len(_COLORS)]
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}"><title>{escape(name)}: '
                    f'{acc * 100:.2f} %, {cost:.4g}</title></circle>')
        if name in best:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="none" stroke="#222" stroke-width="2"/>')
        weight = ' font-weight="bold"' if name in best else ""
        body.append(f'<text x="{x + 11:.1f}" y="{y + 4:.1f}" font-size="10"{weight}>{escape(name)}</text>')
    return body


def accuracy_cost_chart(models: list[dict]) -> str | None:
    """Test accuracy against host latency (p50, 1 thread) and against file size, for every
    evaluated ``.tflite``; the best variants (nothing both cheaper and more accurate) ringed.
    None when fewer than two files have both figures."""
    rows = [m for m in models if m.get("accuracy") is not None and m.get("latency_ms") and m.get("size_bytes")]
    if len(rows) < 2:
        return None
    accs = [m["accuracy"] for m in rows]
    lo, hi = max(0.0, min(accs) - 0.02), min(1.0, max(accs) + 0.02)
    latency = [(m["name"], m["latency_ms"]["p50"], m["accuracy"]) for m in rows]
    size = [(m["name"], m["size_bytes"] / 1024, m["accuracy"]) for m in rows]
    body = (_scatter_panel(60, latency, "latency p50 (ms, 1 thread, this host)", lo, hi)
            + _scatter_panel(440, size, "file size (KiB)", lo, hi)
            + ['<text x="400" y="338" text-anchor="middle" font-size="11">ringed: best choices '
               '(no other file is both cheaper and more accurate)</text>'])
    return _frame(800, 350, "Test accuracy against latency and size", body)
