"""The loss curve as a PNG: raw per-step points, a smoothed line, chunk boundaries."""

from __future__ import annotations

import io

from dreambooth_core.reports.loss_log import LossRow

POINTS_PER_WINDOW = 40  # the smoothing window spans 1/40 of the steps shown, at least 5 steps


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
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(9, 4.5), dpi=100)
    axes = figure.subplots()
    steps, losses = [r.step for r in rows], [r.loss for r in rows]
    axes.scatter(steps, losses, s=6, alpha=0.35, color="tab:blue", label="loss per step")
    if rows:
        axes.plot(steps, smoothed(losses, smoothing_weight(len(losses))), color="tab:red", linewidth=2, label="smoothed")
    last = steps[-1] if steps else 0
    for index, boundary in enumerate(b for b in boundaries if 0 < b <= last):
        axes.axvline(boundary, color="grey", linestyle="--", linewidth=1,
                     label="checkpoint" if index == 0 else None)
    axes.set(xlabel="step", ylabel="loss", title=title)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    if rows:
        axes.legend(loc="upper right")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
