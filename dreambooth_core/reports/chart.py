"""A small line chart drawn with Pillow: axes with round-number ticks, points, lines, dashed
markers and a legend. Pillow is imported anyway for photos; a plotting library would add
most of a second to the first chart of every run."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

Colour = tuple[int, int, int]
INK, GRID, FRAME = (40, 40, 40), (228, 228, 228), (160, 160, 160)


def nice_ticks(low: float, high: float, count: int = 6, integers: bool = False) -> list[float]:
    """About `count` round numbers (1, 2, 2.5 or 5 times a power of ten) from low to high."""
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    if integers:
        step = max(1, round(step))
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def tick_label(value: float, ticks: list[float]) -> str:
    """The value with as many decimals as the tick spacing needs (0.25 -> two)."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = next(d for d in range(7) if abs(round(step, d) - step) <= step * 1e-6 or d == 6)
    return f"{value:.{decimals}f}"


def padded_range(values: list[float],
                 fallback: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """The values' range with 5% to spare at each end (a flat line gets a range around it)."""
    if not values:
        return fallback
    low, high = min(values), max(values)
    spare = (high - low) * 0.05 or abs(high) * 0.5 or 0.5
    return low - spare, high + spare


def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's own scalable font (Pillow 10.1+)


@dataclass
class Chart:
    """A white canvas whose plot area maps x_range by y_range."""

    width: int
    height: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    margins: tuple[int, int, int, int] = (74, 42, 22, 52)  # left, top, right, bottom

    def __post_init__(self) -> None:
        self.image = Image.new("RGB", (self.width, self.height), "white")
        self.draw = ImageDraw.Draw(self.image)
        left, top, right, bottom = self.margins
        self.area = (left, top, self.width - right, self.height - bottom)

    def at(self, x: float, y: float) -> tuple[float, float]:
        (x0, x1), (y0, y1), (left, top, right, bottom) = self.x_range, self.y_range, self.area
        return (left + (x - x0) / ((x1 - x0) or 1) * (right - left),
                bottom - (y - y0) / ((y1 - y0) or 1) * (bottom - top))

    def axes(self, title: str, x_label: str, y_label: str, integer_x: bool = False) -> None:
        left, top, right, bottom = self.area
        small = font(12)
        x_ticks = nice_ticks(*self.x_range, count=8, integers=integer_x)
        for x in x_ticks:
            px = self.at(x, 0)[0]
            self.draw.line([(px, top), (px, bottom)], fill=GRID)
            self._text((px, bottom + 5), tick_label(x, x_ticks), small, "ma")
        y_ticks = nice_ticks(*self.y_range, count=6)
        for y in y_ticks:
            py = self.at(0, y)[1]
            self.draw.line([(left, py), (right, py)], fill=GRID)
            self._text((left - 6, py), tick_label(y, y_ticks), small, "rm")
        self.draw.rectangle(self.area, outline=FRAME)
        self._text((self.width / 2, top / 2), title, font(15), "mm")
        self._text(((left + right) / 2, self.height - 14), x_label, font(13), "mm")
        self._vertical_text((16, (top + bottom) / 2), y_label, font(13))

    def points(self, xs: list[float], ys: list[float], colour: Colour, radius: float = 2.5) -> None:
        for x, y in zip(xs, ys):
            px, py = self.at(x, y)
            self.draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=colour)

    def line(self, xs: list[float], ys: list[float], colour: Colour, width: int = 2) -> None:
        if len(xs) > 1:
            self.draw.line([self.at(x, y) for x, y in zip(xs, ys)], fill=colour, width=width,
                           joint="curve")

    def dashed_vertical(self, x: float, colour: Colour, dash: int = 6) -> None:
        px, (_, top, _, bottom) = self.at(x, 0)[0], self.area
        for y in range(top, bottom, 2 * dash):
            self.draw.line([(px, y), (px, min(y + dash, bottom))], fill=colour)

    def legend(self, items: list[tuple[str, Colour]]) -> None:
        """Labels with their colours in a box at the top right of the plot area."""
        small = font(12)
        width = max(self.draw.textlength(label, font=small) for label, _ in items) + 40
        _, top, right, _ = self.area
        box = (right - width - 8, top + 8, right - 8, top + 14 + 18 * len(items))
        self.draw.rectangle(box, fill="white", outline=FRAME)
        for index, (label, colour) in enumerate(items):
            y = box[1] + 14 + 18 * index
            self.draw.line([(box[0] + 8, y), (box[0] + 28, y)], fill=colour, width=3)
            self._text((box[0] + 34, y), label, small, "lm")

    def png(self) -> bytes:
        out = io.BytesIO()
        self.image.save(out, format="PNG")
        return out.getvalue()

    def _text(self, at: tuple[float, float], text: str, face, anchor: str) -> None:
        self.draw.text(at, text, fill=INK, font=face, anchor=anchor)

    def _vertical_text(self, centre: tuple[float, float], text: str, face) -> None:
        width = int(self.draw.textlength(text, font=face)) + 4
        label = Image.new("RGB", (width, 18), "white")
        ImageDraw.Draw(label).text((width / 2, 9), text, fill=INK, font=face, anchor="mm")
        turned = label.rotate(90, expand=True)
        self.image.paste(turned,
                         (int(centre[0] - turned.width / 2), int(centre[1] - turned.height / 2)))
