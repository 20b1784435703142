"""Charts as inline SVG, drawn on the server: no script, no library, nothing fetched."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape


@dataclass(frozen=True)
class Usage:
    """``used`` of ``limit`` (``limit`` < 0: unlimited)."""

    label: str
    used: float
    limit: float
    unit: str = ""
    #: A full bar is good news (services up), not a warning (capacity used).
    full_is_good: bool = False

    @property
    def level(self) -> str:
        fraction = 1.0 - self.fraction if self.full_is_good else self.fraction
        return "high" if fraction >= 0.9 else "mid" if fraction >= 0.7 else "low"

    @property
    def fraction(self) -> float:
        if self.limit <= 0:
            return 0.0
        return max(0.0, min(1.0, self.used / self.limit))

    @property
    def text(self) -> str:
        limit = "∞" if self.limit < 0 else _num(self.limit)
        return f"{_num(self.used)} of {limit}{self.unit}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def donut(usage: Usage, size: int = 120) -> Markup:
    """A ring filled to the used fraction, the figures in its middle."""
    radius = size / 2 - 10
    circumference = 2 * 3.141592653589793 * radius
    filled = circumference * usage.fraction
    c = size / 2
    return Markup(
        f'<svg class="donut {usage.level}" width="{size}" height="{size}" '
        f'viewBox="0 0 {size} {size}" role="img" aria-label="{escape(usage.label)}: '
        f'{escape(usage.text)}">'
        f'<circle class="track" cx="{c}" cy="{c}" r="{radius:.1f}" />'
        f'<circle class="fill" cx="{c}" cy="{c}" r="{radius:.1f}" '
        f'stroke-dasharray="{filled:.2f} {circumference:.2f}" '
        f'transform="rotate(-90 {c} {c})" />'
        f'<text x="{c}" y="{c + 5}" text-anchor="middle">{escape(_num(usage.used))}</text>'
        "</svg>"
    )


def bar(usage: Usage, width: int = 220) -> Markup:
    """A horizontal capacity bar with its figures beside it."""
    filled = width * usage.fraction
    return Markup(
        f'<span class="bar {usage.level}">'
        f'<svg width="{width}" height="12" viewBox="0 0 {width} 12" role="img" '
        f'aria-label="{escape(usage.label)}: {escape(usage.text)}">'
        f'<rect class="track" width="{width}" height="12" rx="3" />'
        f'<rect class="fill" width="{filled:.1f}" height="12" rx="3" /></svg>'
        f' <span class="figures">{escape(usage.text)}</span></span>'
    )
