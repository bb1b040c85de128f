"""The loss plot: smoothing and the image itself."""

import io

from PIL import Image

from dreambooth_core.reports.loss_log import LossRow
from dreambooth_core.reports.loss_plot import loss_plot_png, smoothed, smoothing_weight


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
