"""A unit's activation histogram and conditional-probability plot, as small SVG bar charts.

Pure functions of the unit's data: the server caches their bytes, the static
export writes them beside each unit's page. They are written as SVG text
rather than drawn with matplotlib because an export draws two per unit:
matplotlib took 0.5-1 s a plot on the 2-core test machine (10 minutes for a
512-unit layer, over an hour for RN50x4's 2560); these take about a
millisecond. Counts use a log scale, as they span orders of magnitude.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

PLOT_KINDS = ("histogram", "conditional")

WIDTH, HEIGHT = 440, 190
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 10, 40
LEGEND = 120  # the width a legend takes at the right of a plot


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2 or 5 times a power of ten apart)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


def _label(value: float, step: float | None = None) -> str:
    """A tick label with as many digits as the ticks' spacing needs (ticks 0.08515 and 0.0852 differ)."""
    if step is None or step <= 0 or not math.isfinite(step):
        return f"{value:.3g}"
    digits = max(0, -math.floor(math.log10(step)))
    if abs(value) >= 1e5 or (value != 0 and digits > 6):
        return f"{value:.{max(3, digits + math.floor(math.log10(abs(value) or 1)) + 1)}g}"
    return f"{value:.{digits}f}"


class _Chart:
    """An SVG chart with a linear x axis and a log10 y axis of counts (``shares``: a linear one from 0 to 1)."""

    def __init__(self, x_low: float, x_high: float, max_count: int, x_title: str, *, shares: bool = False) -> None:
        if x_high <= x_low:  # one value (a dead unit): give the single bar some width
            pad = abs(x_low) * 0.05 or 0.5
            x_low, x_high = x_low - pad, x_high + pad
        self.x_low, self.x_high = x_low, x_high
        # y is log10(count + 1) (0 stays on the axis); the axis reaches the next power of ten.
        self.decades = max(1, math.ceil(math.log10(max(max_count, 1))))
        self.shares = shares
        self.right = WIDTH - RIGHT  # where the plot ends (a legend, if any, goes after it)
        self.parts: list[str] = []
        self.x_title = x_title

    def x(self, value: float) -> float:
        return LEFT + (value - self.x_low) / (self.x_high - self.x_low) * (self.right - LEFT)

    def y(self, count: float) -> float:
        height = HEIGHT - TOP - BOTTOM
        if self.shares:
            return HEIGHT - BOTTOM - count * height
        return HEIGHT - BOTTOM - (math.log10(count + 1) / math.log10(10 ** self.decades + 1)) * height

    def span(self, left: float, right: float, low: float, high: float, colour: str, title: str) -> None:
        """A bar from ``low`` to ``high`` on the y axis (a part of a stacked bar)."""
        x0, x1 = self.x(left), self.x(right)
        self.parts.append(f'<rect x="{x0:.2f}" y="{self.y(high):.2f}" width="{max(x1 - x0, 0.8):.2f}" '
                          f'height="{self.y(low) - self.y(high):.2f}" fill="{colour}"><title>{escape(title)}'
                          f'</title></rect>')

    def legend(self, entries: list[tuple[str, str]]) -> None:
        """Colour swatches and names in a column at the right of the plot (which gives up the room first:
        call before drawing)."""
        self.right = WIDTH - RIGHT - LEGEND
        for row, (colour, text) in enumerate(entries):
            y = TOP + 4 + row * 14
            name = text if len(text) <= 18 else text[:17] + "…"
            self.parts.append(f'<rect x="{self.right + 10}" y="{y}" width="8" height="8" fill="{colour}"/>'
                              f'<text x="{self.right + 22}" y="{y + 8}"><title>{escape(text)}</title>'
                              f'{escape(name)}</text>')

    def bar(self, left: float, right: float, count: int, colour: str) -> None:
        x0, x1 = self.x(left), self.x(right)
        top = self.y(count)
        self.parts.append(f'<rect x="{x0:.2f}" y="{top:.2f}" width="{max(x1 - x0, 0.8):.2f}" '
                          f'height="{HEIGHT - BOTTOM - top:.2f}" fill="{colour}"><title>{count} images, '
                          f'{_label(left)} to {_label(right)}</title></rect>')

    def vline(self, value: float, colour: str, text: str) -> None:
        if self.x_low <= value <= self.x_high:
            x = self.x(value)
            self.parts.append(f'<line x1="{x:.2f}" x2="{x:.2f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="{colour}" '
                              f'stroke-dasharray="3 2"/><text x="{x + 3:.2f}" y="{TOP + 10}" fill="{colour}">'
                              f'{escape(text)}</text>')

    def svg(self) -> bytes:
        axes = [f'<line x1="{LEFT}" x2="{self.right}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}" stroke="#444"/>',
                f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#444"/>']
        ticks = _nice_ticks(self.x_low, self.x_high)
        step = ticks[1] - ticks[0] if len(ticks) > 1 else None
        for tick in ticks:
            x = self.x(tick)
            axes.append(f'<line x1="{x:.2f}" x2="{x:.2f}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM + 4}" '
                        f'stroke="#444"/><text x="{x:.2f}" y="{HEIGHT - BOTTOM + 15}" text-anchor="middle">'
                        f'{_label(tick, step)}</text>')
        y_ticks = [(share, f"{share:g}") for share in (0, 0.25, 0.5, 0.75, 1)] if self.shares else \
            [(count, f"{count:,}") for count in (10 ** power for power in range(self.decades + 1))]  # baseline 0
        for value, text in y_ticks:
            y = self.y(value)
            axes.append(f'<line x1="{LEFT - 4}" x2="{LEFT}" y1="{y:.2f}" y2="{y:.2f}" stroke="#444"/>'
                        f'<text x="{LEFT - 6}" y="{y + 3:.2f}" text-anchor="end">{text}</text>')
        axes.append(f'<text x="{(LEFT + self.right) / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
                    f'{escape(self.x_title)}</text>')
        axes.append(f'<text transform="translate(12 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" '
                    f'text-anchor="middle">{"share of images" if self.shares else "images (log)"}</text>')
        body = "".join(self.parts + axes)
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
                f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="10" fill="#333">'
                f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>{body}</svg>\n').encode()


def _empty(message: str) -> bytes:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="40" viewBox="0 0 {WIDTH} 40" '
            f'font-family="sans-serif" font-size="11"><rect width="{WIDTH}" height="40" fill="white"/>'
            f'<text x="{WIDTH / 2}" y="24" text-anchor="middle" fill="#777">{escape(message)}</text></svg>\n').encode()


def histogram_svg(record: dict[str, Any]) -> bytes:
    """The unit's histogram of max-over-space activations, from :meth:`Atlas.unit`'s record."""
    histogram = record.get("histogram")
    if not histogram:
        return _empty("no histogram: this layer was not scanned")
    if not histogram["counts"]:  # scanned, but every image gave inf/NaN (or none was scanned)
        return _empty("no histogram: no finite activations for this unit")
    edges, counts = histogram["edges"], histogram["counts"]
    chart = _Chart(edges[0], edges[-1], max(counts), "activation (max over space)")
    for left, right, count in zip(edges[:-1], edges[1:], counts):
        if count:
            chart.bar(left, right, count, "#4a78b5")
    stats = record.get("stats") or {}
    if stats.get("mean") is not None:
        chart.vline(stats["mean"], "#c33", f"mean {stats['mean']:.3g}")
    return chart.svg()


#: Colours of the folders a conditional plot names; the rest share OTHER_COLOUR.
CATEGORY_COLOURS = ("#4a78b5", "#d9822b", "#6a9f58", "#b5524a", "#8a6bb5", "#4aa5a5")
OTHER_COLOUR = "#bbbbbb"


def conditional_svg(buckets: list[dict[str, Any]]) -> bytes:
    """The paper's conditional-probability plot: per uniform bucket of activation in SDs from zero, the share
    of its images in each folder, stacked (the folders the top buckets share most, named; the rest grey).
    Images in no folder have nothing to share out: the bucket's image counts instead.

    Args:
        buckets: :func:`neuronscope.atlas.store.conditional_buckets`' ``[{"from_sd", "to_sd", "count",
            "samples", "categories"}]``.
    """
    if not buckets:
        return _empty("no conditional plot: no finite activations for this unit, or its layer was not scanned")
    low, high = min(b["from_sd"] for b in buckets), max(b["to_sd"] for b in buckets)
    x_title = "activation, standard deviations from zero"
    if not any(bucket["categories"] for bucket in buckets):
        chart = _Chart(low, high, max(b["count"] for b in buckets), x_title)
        for bucket in buckets:
            chart.bar(bucket["from_sd"], bucket["to_sd"], bucket["count"], "#6a9f58")
    else:
        chart = _Chart(low, high, 1, x_title, shares=True)
        named = _named_categories(buckets)
        colour = dict(zip(named, CATEGORY_COLOURS))
        others = any(name not in colour for bucket in buckets for name in bucket["categories"])
        chart.legend([(colour[name], name) for name in named] + ([(OTHER_COLOUR, "other folders")] if others else []))
        for bucket in buckets:
            bottom = 0.0
            parts = [(name, bucket["categories"][name]) for name in named if name in bucket["categories"]]
            other = sum(share for name, share in bucket["categories"].items() if name not in colour)
            for name, share in [*parts, ("other folders", other)]:
                if share > 0:
                    chart.span(bucket["from_sd"], bucket["to_sd"], bottom, bottom + share,
                               colour.get(name, OTHER_COLOUR), f"{name}: {share:.0%} of {bucket['count']:,} images")
                    bottom += share
    chart.vline(0.0, "#333", "0")
    return chart.svg()


def _named_categories(buckets: list[dict[str, Any]]) -> list[str]:
    """The folders a plot names: those with the largest share in the upper half of the buckets (where a unit's
    concept shows), then in all, at most one per colour."""
    upper = buckets[len(buckets) // 2:]
    def weight(name: str) -> tuple[float, float]:
        return (sum(b["categories"].get(name, 0.0) for b in upper), sum(b["categories"].get(name, 0.0) for b in buckets))
    names = {name for bucket in buckets for name in bucket["categories"]}
    return sorted(names, key=lambda name: (*(-w for w in weight(name)), name))[:len(CATEGORY_COLOURS)]
