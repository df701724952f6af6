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
