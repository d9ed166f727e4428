"""The dashboard's achieved-RPO chart: an inline SVG with labelled axes, the target line, and bands where
replication was not copying.

The time window runs from the first sample to now (at least ``MIN_WINDOW_SECONDS``, at most the history the
page reads), so a new instance's few samples fill the chart instead of a sliver of a fixed 24 hours. Samples
taken while replication was not copying are drawn as grey "not replicating" bands, never as RPO: their
now-minus-freeze value only measures how long replication has been stopped.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape

from broker.services.protection import REPLICATION_STATES, seconds_text

MIN_WINDOW_SECONDS = 180.0
WIDTH, HEIGHT = 560, 250
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 14, 46
_Y_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800)
_X_STEPS = (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)

Sample = tuple[float, float | None, str]  # (time, achieved RPO, replication state), as the sampler stores them


def copying(state: str) -> bool:
    meaning = REPLICATION_STATES.get(state)
    return bool(meaning and meaning.copying)


def window(samples: Sequence[Sample], now: float) -> tuple[float, float]:
    first = samples[0][0] if samples else now
    return min(first, now - MIN_WINDOW_SECONDS), now


def _step(span: float, steps: Sequence[int], most: int) -> int:
    return next((s for s in steps if span / s <= most), steps[-1])


def _clock(ts: float, with_seconds: bool) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%H:%M:%S" if with_seconds else "%H:%M")


def render(samples: Sequence[Sample], target: float | None, now: float) -> str:
    start, end = window(samples, now)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [r for _, r, s in samples if r is not None and copying(s)]
    peak = max([*values, target or 0.0, 60.0]) * 1.1
    y_step = _step(peak, _Y_STEPS, 5)
    top = math.ceil(peak / y_step) * y_step

    def x(t: float) -> float:
        return LEFT + (t - start) / (end - start) * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - min(v, top) / top * plot_h

    parts = [f'<svg id="rpo-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
             f'role="img" aria-label="achieved RPO from {_clock(start, True)} to {_clock(end, True)} UTC" '
             f'data-start="{start:.0f}" data-end="{end:.0f}" data-samples="{len(samples)}">']
    # not-replicating bands: from such a sample to the next sample (or now)
    bands: list[tuple[float, float]] = []
    for i, (t, _, state) in enumerate(samples):
        if copying(state):
            continue
        until = samples[i + 1][0] if i + 1 < len(samples) else end
        if bands and abs(bands[-1][1] - t) < 1e-6:
            bands[-1] = (bands[-1][0], until)
        else:
            bands.append((t, until))
    for n, (a, b) in enumerate(bands):
        parts.append(f'<rect class="not-replicating" x="{x(a):.1f}" y="{TOP}" width="{max(2.0, x(b) - x(a)):.1f}" '
                     f'height="{plot_h}" fill="#e0e0e0"/>')
        if n == 0 and x(b) - x(a) > 70:
            parts.append(f'<text x="{x(a) + 4:.1f}" y="{TOP + 14}" font-size="11" fill="#525252">not replicating'
                         '</text>')
    # axes, grid and ticks
    for k in range(int(top // y_step) + 1):
        v = k * y_step
        parts.append(f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{WIDTH - RIGHT}" y2="{y(v):.1f}" stroke="#e8e8e8"/>'
                     f'<text class="tick y-tick" x="{LEFT - 6}" y="{y(v) + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{escape(seconds_text(v))}</text>')
    x_step = _step(end - start, _X_STEPS, 6)
    tick = math.ceil(start / x_step) * x_step
    while tick <= end:
        if x(tick) > WIDTH - RIGHT - 22:  # its label would be cut at the edge
            break
        parts.append(f'<line x1="{x(tick):.1f}" y1="{TOP + plot_h}" x2="{x(tick):.1f}" y2="{TOP + plot_h + 4}" '
                     f'stroke="#8d8d8d"/><text class="tick x-tick" x="{x(tick):.1f}" y="{TOP + plot_h + 17}" '
                     f'font-size="11" text-anchor="middle">{_clock(tick, x_step < 60)}</text>')
        tick += x_step
    parts.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#8d8d8d"/>'
                 f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" stroke="#8d8d8d"/>'
                 f'<text id="rpo-x-label" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" font-size="12" '
                 f'text-anchor="middle">time (UTC)</text>'
                 f'<text id="rpo-y-label" x="14" y="{TOP + plot_h / 2:.1f}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">achieved RPO</text>')
    if target:
        parts.append(f'<line id="rpo-target-line" x1="{LEFT}" y1="{y(target):.1f}" x2="{WIDTH - RIGHT}" '
                     f'y2="{y(target):.1f}" stroke="#da1e28" stroke-dasharray="6 4"/>'
                     f'<text x="{WIDTH - RIGHT - 4}" y="{y(target) - 5:.1f}" font-size="11" fill="#da1e28" '
                     f'text-anchor="end">target {escape(seconds_text(target))}</text>')
    # the line: one segment per run of copying samples
    segments: list[list[tuple[float, float]]] = [[]]
    for t, r, state in samples:
        if r is None or not copying(state):
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append((t, r))
    points = [p for seg in segments for p in seg]
    for seg in (s for s in segments if s):
        coords = " ".join(f"{x(t):.1f},{y(r):.1f}" for t, r in seg)
        parts.append(f'<polyline class="rpo-line" fill="none" stroke="#0f62fe" stroke-width="2" points="{coords}"/>')
    if len(points) <= 120:
        parts += [f'<circle class="rpo-point" cx="{x(t):.1f}" cy="{y(r):.1f}" r="2.5" fill="#0f62fe"/>'
                  for t, r in points]
    if not samples:
        parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" font-size="12" '
                     'text-anchor="middle">no samples yet</text>')
    parts.append("</svg>")
    return "".join(parts)
