"""Small inline SVG charts for the /ops page: no library, no CDN, a few hundred bytes each."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo


def _e(text: object) -> str:
    return html.escape(str(text))


def stacked_bars(
    series: Sequence[tuple[str, str, Sequence[int]]],
    starts: Sequence[datetime],
    tz: tzinfo,
    *,
    title: str,
    label_every: int,
    step_label: Callable[[datetime], str],
    chart_id: str,
) -> str:
    """An SVG bar chart, one bar per start, stacked by series (label, color, counts)."""
    width, height, left, bottom, top = 720, 170, 34, 22, 8
    slots = max(1, len(starts))
    totals = [sum(s[2][i] for s in series) for i in range(len(starts))]
    peak = max([*totals, 1])
    plot_h = height - bottom - top
    bar_w = (width - left) / slots
    parts = [
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width}" y2="{top + plot_h}" class="axis"/>',
        f'<text x="{left - 4}" y="{top + 8}" class="tick" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" class="tick" text-anchor="end">0</text>',
    ]
    for i, start in enumerate(starts):
        x = left + i * bar_w
        y = float(top + plot_h)
        tip = [step_label(start)]
        for label, color, counts in series:
            n = counts[i]
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{color}"/>'
            )
            tip.append(f"{label}: {n}")
        # A transparent bar over the slot carries the tooltip: the whole column is hoverable.
        parts.append(
            f'<rect x="{x:.1f}" y="{top}" width="{bar_w:.1f}" height="{plot_h}" '
            f'class="slot" data-total="{totals[i]}"><title>{_e(", ".join(tip))}</title></rect>'
        )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{height - 6}" class="tick" '
                f'text-anchor="middle">{_e(f"{start.astimezone(tz):%H:%M}")}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def sparkline(counts: Sequence[int], color: str) -> str:
    width, height = 120, 24
    peak = max([*counts, 1])
    step = width / max(1, len(counts) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (height - 4) * n / peak:.1f}" for i, n in enumerate(counts)
    )
    return (
        f'<svg class="spark" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"/></svg>'
    )
