"""What the training loop reports as it runs: loss log, progress, loss plot.

The loop calls `chunk_started`, `step` for every step and `chunk_finished`
once the chunk's checkpoint is written (or handed to a background commit). Losses arrive
as device tensors and are read in one batch every `log_every` steps (reading one is a host-device sync point);
the last batch of a chunk is written to reports/loss.csv before the loop
returns, so every committed step has its row. Callbacks receive a Progress at
each batch and a ChunkReport at the end of a chunk; a failing callback is
logged and never stops training.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from dreambooth_core.reports.chart import Chart, padded_range
from dreambooth_core.reports.loss_log import LossLog, LossRow
from dreambooth_core.reports.terminal import progress_bar
from dreambooth_core.reports.timing import estimate_text, record_chunk_time
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import LOSS_PNG

LOG_EVERY = 50


def duration_text(seconds: float) -> str:
    """'45 s', '3 min 05 s', '1 h 02 min': a measured duration (an estimate: timing.estimate_text)."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class Progress:
    done: int            # steps completed, over the whole run
    total: int
    chunk_start: int
    chunk_end: int
    rate: float          # steps per second in this chunk so far (0 before the first batch)
    loss: float | None   # mean loss of the last batch of steps

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    @property
    def seconds_left(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    def text(self) -> str:
        """'12/20 steps (60%) · 3.41 it/s · about 2 s left · loss 0.1234'"""
        parts = [f"{self.done}/{self.total} steps ({self.percent:.0f}%)"]
        if self.rate > 0:
            parts.append(f"{self.rate:.2f} it/s")
            parts.append(f"about {estimate_text(self.seconds_left)} left")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        return " · ".join(parts)


@dataclass(frozen=True)
class ChunkReport:
    start: int
    end: int
    total: int
    seconds: float
    mean_loss: float | None
    plot: str  # session-relative path of the loss plot


class TrainingMonitor:
    def __init__(self, session: Session, boundaries: Iterable[int] = (),
                 log: logging.Logger | None = None, log_every: int = LOG_EVERY,
                 on_progress: Iterable[Callable[[Progress], None]] = (),
                 on_chunk_end: Iterable[Callable[[ChunkReport], None]] = ()):
        self.session, self.boundaries = session, sorted(boundaries)
        self.log = log or logging.getLogger("dreambooth")
        self.log_every = log_every
        self.on_progress, self.on_chunk_end = list(on_progress), list(on_chunk_end)
        self.loss_log = LossLog(session)
        self.start = self.end = self.total = 0

    def chunk_started(self, start: int, end: int, total: int) -> None:
        """Training resumes after step `start`: its later rows will be written again."""
        self.start, self.end, self.total = start, end, total
        self.session.remove_temporary("reports")  # what a killed run's report writes left
        self.loss_log.restart_after(start)
        self.pending: list[tuple[int, torch.Tensor, float | None]] = []
        self.chunk_losses: list[float] = []
        self.began = time.perf_counter()
        self.bar = progress_bar(total, f"train {self.session.name}", initial=start)
        self._notify(self.on_progress, Progress(start, total, start, end, 0.0, None))

    def step(self, step: int, loss: torch.Tensor, learning_rate: float | None = None) -> None:
        """Step `step` (0-based) has run; `loss` stays on the device until the next batch."""
        self.pending.append((step, loss, learning_rate))
        self.bar.update(1)
        done = step + 1
        if (done - self.start) % self.log_every == 0 or done == self.end:
            self._flush(done)

    def flush(self, done: int) -> None:
        """Training stops early after step `done`: record what is pending now."""
        if self.pending:
            self._flush(done)

    def _flush(self, done: int) -> None:
        values = torch.stack([loss for _, loss, _ in self.pending]).float().cpu().tolist()  # sync
        self.loss_log.extend([LossRow(step + 1, value, None if rate is None else float(rate))
                              for (step, _, rate), value in zip(self.pending, values)])
        self.loss_log.flush()
        self.pending = []
        self.chunk_losses.extend(values)
        rate = (done - self.start) / max(time.perf_counter() - self.began, 1e-9)
        progress = Progress(done, self.total, self.start, self.end, rate, sum(values) / len(values))
        self.bar.set_postfix_str(f"loss {progress.loss:.4f}")
        if done == self.end:
            self.bar.close()  # before the commit's log lines
        else:
            self.bar.clear()  # the log line gets a line of its own
        self.log.info("Training: %s", progress.text())
        self.bar.refresh()
        self._notify(self.on_progress, progress)

    def chunk_finished(self) -> ChunkReport:
        """Record the chunk's time, redraw the loss plot, tell the callbacks."""
        seconds = time.perf_counter() - self.began
        self.bar.close()
        record_chunk_time(self.session, self.start, self.end, seconds)
        title = f"{self.session.name}: training loss, steps 1-{self.end} of {self.total}"
        self.session.write_bytes(LOSS_PNG,
                                 loss_plot_png(self.loss_log.rows, self.boundaries, title))
        mean = sum(self.chunk_losses) / len(self.chunk_losses) if self.chunk_losses else None
        report = ChunkReport(self.start, self.end, self.total, seconds, mean, LOSS_PNG)
        self._notify(self.on_chunk_end, report)
        return report

    def _notify(self, callbacks: list[Callable], value) -> None:
        for callback in callbacks:
            try:
                callback(value)
            except Exception as exc:  # reporting must never stop training
                self.log.warning("Could not report training progress (%s: %s); training goes on",
                                 type(exc).__name__, exc)


# The loss curve as a PNG: raw per-step points, a smoothed line, chunk boundaries.

POINTS_PER_WINDOW = 40  # the smoothing window spans 1/40 of the steps shown, at least 5 steps
# light blue points, red line
POINT, SMOOTHED, CHECKPOINT = (166, 200, 225), (214, 39, 40), (128, 128, 128)


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
