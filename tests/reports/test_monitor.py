"""The training monitor: loss log that survives resumes, progress, plot (its smoothing and the image
itself), callbacks, terminal bar."""

import io
import os
import sys

import pytest
import torch
from PIL import Image

from dreambooth_core.config import TrainingSettings
from dreambooth_core.reports.loss_log import LossRow, read_loss_rows
from dreambooth_core.reports.monitor import (
    Progress,
    TrainingMonitor,
    duration_text,
    loss_plot_png,
    smoothed,
    smoothing_weight,
)
from dreambooth_core.reports.timing import training_speed
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import LOSS_CSV, LOSS_PNG, TIMING_JSON
from dreambooth_core.families import load_model_parts
from dreambooth_core.training.trainer import Example, Trainer

# A warm-up, so the learning rate differs between steps.
OPTIONS = TrainingSettings(seed=5, learning_rate=1e-4, warmup_steps=3, text_encoder_steps=0)


def tiny_trainer(model_path: str) -> Trainer:
    pixels = [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(2)]
    examples = [Example(pixels=p, caption="photo of shrk", subject="shrk") for p in pixels]
    return Trainer(load_model_parts(model_path, torch.device("cpu")), examples, OPTIONS, total_steps=4)


def train(trainer: Trainer, monitor: TrainingMonitor, start: int, end: int, total: int,
          stop_after: int | None = None) -> None:
    """The loop as dreambooth_core/training/chunk.py drives it; `stop_after` steps = the process dies."""
    monitor.chunk_started(start, end, total)
    for step in range(start, end if stop_after is None else start + stop_after):
        monitor.step(step, trainer.step(step), trainer.optimizer.param_groups[0]["lr"])
    if stop_after is None:
        monitor.chunk_finished()


def test_a_resumed_run_leaves_the_loss_log_of_an_uninterrupted_one(tiny_model_path, tmp_path):
    straight_session = Session(str(tmp_path), "straight")
    straight = tiny_trainer(tiny_model_path)
    monitor = TrainingMonitor(straight_session, [2, 4], log_every=1)
    train(straight, monitor, 0, 2, 4)
    train(straight, monitor, 2, 4, 4)

    session = Session(str(tmp_path), "killed")
    first = tiny_trainer(tiny_model_path)
    train(first, TrainingMonitor(session, [2, 4], log_every=1), 0, 2, 4)
    CheckpointStore(session).save(2, first.state_writers(), meta={})
    # Step 3 is logged, then the process dies before step 4 commits.
    train(first, TrainingMonitor(session, [2, 4], log_every=1), 2, 4, 4, stop_after=1)
    assert [row.step for row in read_loss_rows(session)] == [1, 2, 3]

    resumed = tiny_trainer(tiny_model_path)
    resumed.load_state(CheckpointStore(session).load_latest())
    train(resumed, TrainingMonitor(session, [2, 4], log_every=1), 2, 4, 4)

    assert session.read_bytes(LOSS_CSV) == straight_session.read_bytes(LOSS_CSV)
    rows = read_loss_rows(session)
    assert [row.step for row in rows] == [1, 2, 3, 4]
    assert all(row.loss > 0 for row in rows)
    rates = [row.learning_rate for row in rows]
    assert rates == sorted(rates) and len(set(rates)) == 3 and rates[-1] == OPTIONS.learning_rate


def run_chunk(session: Session, losses: list[float], start: int, total: int, **options) -> list[Progress]:
    seen: list[Progress] = []
    monitor = TrainingMonitor(session, [start + len(losses)], on_progress=[seen.append], **options)
    monitor.chunk_started(start, start + len(losses), total)
    for step, loss in enumerate(losses, start=start):
        monitor.step(step, torch.tensor(loss))
    monitor.chunk_finished()
    return seen


def test_a_killed_report_write_leaves_nothing_once_training_resumes(tmp_path):
    session = Session(str(tmp_path), "s")
    leftover = tmp_path / "s" / "reports" / "timing.json.tmp-0123abcd"
    leftover.parent.mkdir(parents=True)
    leftover.write_text('{"chunks": {"4"')
    run_chunk(session, [1.0, 1.0], 0, 2)
    assert sorted(p.name for p in leftover.parent.iterdir()) == ["loss.csv", "loss.png", "timing.json"]


def test_progress_reports_steps_speed_time_left_and_loss(tmp_path):
    session = Session(str(tmp_path), "s")
    seen = run_chunk(session, [1.0, 3.0, 2.0, 2.0, 5.0], start=10, total=20, log_every=2)
    assert [p.done for p in seen] == [10, 12, 14, 15]  # at the start, every 2 steps, at the end
    assert seen[0].rate == 0 and seen[0].text() == "10/20 steps (50%)"
    last = seen[-1]
    assert last.loss == 5.0 and last.rate > 0 and last.seconds_left == pytest.approx(5 / last.rate)
    assert last.text().startswith("15/20 steps (75%) · ") and last.text().endswith(" left · loss 5.0000")
    assert seen[1].loss == 2.0  # the mean of its batch
    assert [r.step for r in read_loss_rows(session)] == [11, 12, 13, 14, 15]


def test_chunk_end_draws_the_loss_plot_and_records_the_time(tmp_path):
    session = Session(str(tmp_path), "s")
    reports = []
    monitor = TrainingMonitor(session, [3, 6], on_chunk_end=[reports.append])
    monitor.chunk_started(0, 3, 6)
    for step in range(3):
        monitor.step(step, torch.tensor(0.5))
    report = monitor.chunk_finished()
    assert reports == [report] and report.mean_loss == 0.5 and report.plot == LOSS_PNG
    assert Image.open(io.BytesIO(session.read_bytes(LOSS_PNG))).size == (900, 450)
    assert session.read_json(TIMING_JSON)["chunks"]["3"]["start"] == 0
    steps, seconds = training_speed(session)
    assert steps == 3 and seconds > 0


def test_a_failing_callback_is_logged_and_training_goes_on(tmp_path, caplog):
    def broken(progress):
        raise ConnectionError("API unreachable")

    seen = run_chunk(Session(str(tmp_path), "s"), [1.0, 1.0], 0, 2)
    assert seen  # the callback that works still runs
    monitor = TrainingMonitor(Session(str(tmp_path), "t"), on_progress=[broken])
    monitor.chunk_started(0, 2, 2)
    monitor.step(0, torch.tensor(1.0))
    monitor.step(1, torch.tensor(1.0))
    assert monitor.chunk_finished().end == 2
    assert "Could not report training progress (ConnectionError: API unreachable)" in caplog.text


def terminal_output(monkeypatch, tty: bool, tmp_path) -> str:
    if tty:
        leader, follower = os.openpty()
        stream = os.fdopen(follower, "w")
    else:
        stream = open(tmp_path / "stderr.txt", "w")
    monkeypatch.setattr(sys, "stderr", stream)
    run_chunk(Session(str(tmp_path), "s"), [1.0] * 4, 0, 4)
    stream.flush()
    if not tty:
        return (tmp_path / "stderr.txt").read_text()
    os.set_blocking(leader, False)
    try:
        return os.read(leader, 65536).decode(errors="replace")
    finally:
        stream.close()
        os.close(leader)


def test_a_terminal_gets_a_progress_bar_and_a_file_gets_none(monkeypatch, tmp_path):
    bar = terminal_output(monkeypatch, True, tmp_path)
    assert "train s: 100%" in bar and "4/4" in bar and "loss 1.0000" in bar
    assert terminal_output(monkeypatch, False, tmp_path) == ""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_steps_between_log_intervals_never_wait_for_the_gpu(tmp_path):
    session = Session(str(tmp_path), "s")
    losses = [torch.rand((), device="cuda") for _ in range(4)]
    monitor = TrainingMonitor(session, log_every=4)
    monitor.chunk_started(0, 4, 4)
    torch.cuda.set_sync_debug_mode("error")  # any host-device sync raises
    try:
        for step in range(3):
            monitor.step(step, losses[step], 1e-6)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    monitor.step(3, losses[3], 1e-6)  # the one read of the batch
    assert [row.loss for row in read_loss_rows(session)] == [loss.item() for loss in losses]


def test_durations_read_naturally():
    assert [duration_text(s) for s in (4.4, 65, 3725)] == ["4 s", "1 min 05 s", "1 h 02 min"]


# The loss plot: smoothing and the image itself.
def test_smoothing_follows_the_trend_without_starting_at_zero():
    assert smoothed([2.0, 2.0, 2.0], 0.9) == [2.0, 2.0, 2.0]
    steps = smoothed([1.0] * 20 + [0.0] * 20, 0.8)
    assert steps[0] == 1.0 and steps[25] < 0.5 and all(a >= b - 1e-12 for a, b in zip(steps, steps[1:]))
    assert smoothing_weight(40) == 0.8 and smoothing_weight(4000) == 1 - 1 / 100


def test_the_plot_is_a_png_with_the_curve_drawn(tmp_path):
    rows = [LossRow(step, 1.0 / step) for step in range(1, 101)]
    image = Image.open(io.BytesIO(loss_plot_png(rows, [50, 100], "demo"))).convert("RGB")
    assert image.format is None and image.size == (900, 450)
    colours = {image.getpixel((x, y)) for x in range(0, 900, 3) for y in range(0, 450, 3)}
    assert any(r > 150 and g < 80 and b < 80 for r, g, b in colours)  # the red smoothed line
    empty = Image.open(io.BytesIO(loss_plot_png([], [50], "nothing yet")))
    assert empty.size == (900, 450)
