"""Tiny inline-SVG charts (bars and a line), so the HTML report needs no script library or network."""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

WIDTH, ROW, LEFT, PLOT_H = 720, 22, 240, 220


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}"


def _scale(values: Sequence[float], log: bool) -> tuple[list[float], float, float]:
    """Values mapped for plotting (log10 when ``log``; zeros sit one decade below the smallest), with the range."""
    finite = [v for v in values if math.isfinite(v)]
    if log:
        positive = [v for v in finite if v > 0]
        floor = math.floor(math.log10(min(positive))) - 1 if positive else -8
        mapped = [math.log10(v) if v > 0 and math.isfinite(v) else (floor if v <= 0 else floor + 12) for v in values]
        return mapped, floor, max(mapped + [floor + 1])
    top = max(finite + [0.0]) or 1.0
    return [v if math.isfinite(v) else top for v in values], 0.0, top


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], *, log: bool = False, unit: str = "",
              colors: Sequence[str] | None = None) -> str:
    """Horizontal bars, one per label; hover shows the exact value."""
    mapped, low, high = _scale(values, log)
    height = 30 + ROW * len(labels)
    span = (high - low) or 1.0
    parts = [f'<svg class="plot" role="img" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">',
             f'<text x="0" y="16" class="title">{escape(title)}</text>']
    for i, (label, value, m) in enumerate(zip(labels, values, mapped)):
        y = 26 + i * ROW
        width = max(1.0, (m - low) / span * (WIDTH - LEFT - 90))
        color = colors[i] if colors else "#4477aa"
        parts.append(f'<text x="{LEFT - 6}" y="{y + 14}" text-anchor="end">{escape(label[-34:])}</text>'
                     f'<rect x="{LEFT}" y="{y + 2}" width="{width:.1f}" height="{ROW - 6}" fill="{color}">'
                     f'<title>{escape(label)}: {_fmt(value)}{unit}</title></rect>'
                     f'<text x="{LEFT + width + 4:.1f}" y="{y + 14}">{_fmt(value)}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(title: str, labels: Sequence[str], values: Sequence[float], flags: Sequence[bool], *, marker: int | None = None) -> str:
    """Values along the x axis (log10 y); flagged points are red; ``marker`` draws a vertical line at that point."""
    mapped, low, high = _scale(values, True)
    span, count = (high - low) or 1.0, max(len(values) - 1, 1)
    x0, width = 60, WIDTH - 80

    def xy(i: int) -> tuple[float, float]:
        return x0 + i / count * width, 30 + (1 - (mapped[i] - low) / span) * PLOT_H

    parts = [f'<svg class="plot" role="img" width="{WIDTH}" height="{PLOT_H + 60}" viewBox="0 0 {WIDTH} {PLOT_H + 60}">',
             f'<text x="0" y="16" class="title">{escape(title)}</text>',
             f'<text x="0" y="{30 + PLOT_H / 2}" class="axis">log10</text>',
             f'<text x="{x0 - 6}" y="36" text-anchor="end">{round(high)}</text>',
             f'<text x="{x0 - 6}" y="{30 + PLOT_H}" text-anchor="end">{round(low)}</text>',
             f'<line x1="{x0}" y1="{30 + PLOT_H}" x2="{x0 + width}" y2="{30 + PLOT_H}" stroke="#999"/>']
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in map(xy, range(len(values))))
    parts.append(f'<polyline points="{points}" fill="none" stroke="#4477aa" stroke-width="1.5"/>')
    if marker is not None:
        x, _ = xy(marker)
        parts.append(f'<line x1="{x:.1f}" y1="26" x2="{x:.1f}" y2="{30 + PLOT_H}" stroke="#cc3311" stroke-dasharray="4 3"/>')
    for i, (label, value, flag) in enumerate(zip(labels, values, flags)):
        x, y = xy(i)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{"#cc3311" if flag else "#4477aa"}">'
                     f'<title>{escape(label)}: {_fmt(value)}</title></circle>')
    parts.append(f'<text x="{x0}" y="{PLOT_H + 52}" class="axis">graph order: first tensor to last (hover a point for its name)</text></svg>')
    return "".join(parts)
