"""The loss curve as a PNG: raw per-step points, a smoothed line, chunk boundaries."""

from __future__ import annotations

from dreambooth_core.reports.chart import Chart, padded_range
from dreambooth_core.reports.loss_log import LossRow

POINTS_PER_WINDOW = 40  # the smoothing window spans 1/40 of the steps shown, at least 5 steps
POINT, SMOOTHED, CHECKPOINT = (166, 200, 225), (214, 39, 40), (128, 128, 128)  # light blue points, red line


def smoothing_weight(count: int) -> float:
    """Weight of the past in the moving average: a window of ~count/40 steps."""
    return 1 - 1 / max(5, count / POINTS_PER_WINDOW)


def smoothed(values: list[float], weight: float) -> list[float]:
    """Exponential moving average, bias-corrected so the first points are not pulled to 0."""
    out, average = [], 0.0
    for count, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** count))
    return out


def loss_plot_png(rows: list[LossRow], boundaries: list[int], title: str) -> bytes:
    """A 900x450 PNG of the loss per step; dashed lines at committed chunk ends."""
    steps, losses = [r.step for r in rows], [r.loss for r in rows]
    last = steps[-1] if steps else 0
    shown = [b for b in boundaries if 0 < b <= last]
    chart = Chart(900, 450, padded_range(steps + shown, (0.0, 1.0)), padded_range(losses))
    chart.axes(title, "step", "loss", integer_x=True)
    for boundary in shown:
        chart.dashed_vertical(boundary, CHECKPOINT)
    chart.points(steps, losses, POINT)
    chart.line(steps, smoothed(losses, smoothing_weight(len(losses))), SMOOTHED)
    if rows:
        chart.legend([("loss per step", POINT), ("smoothed", SMOOTHED)] +
                     ([("checkpoint", CHECKPOINT)] if shown else []))
    return chart.png()
