"""The loss plot's axes: round-number ticks labelled with the decimals their spacing needs."""

import pytest

from dreambooth_core.reports.chart import nice_ticks, padded_range, tick_label


@pytest.mark.parametrize(("low", "high", "count", "integers", "expected"), [
    (0, 105, 8, True, [0, 20, 40, 60, 80, 100]),
    (0.18, 0.46, 6, False, [0.2, 0.25, 0.3, 0.35, 0.4, 0.45]),
    (0.5, 1.5, 8, True, [1]),  # one step: no fractional step numbers
    (-1.2, 0.3, 6, False, [-1.0, -0.75, -0.5, -0.25, 0.0, 0.25]),
])
def test_ticks_are_round_numbers_inside_the_range(low, high, count, integers, expected):
    assert nice_ticks(low, high, count, integers) == pytest.approx(expected)


def test_labels_have_the_decimals_of_the_spacing():
    assert [tick_label(v, [0.2, 0.25]) for v in (0.2, 0.25)] == ["0.20", "0.25"]
    assert tick_label(0.3, [0.2, 0.3]) == "0.3" and tick_label(20, [0, 20]) == "20"


def test_ranges_leave_room_around_the_values():
    assert padded_range([1.0, 3.0]) == pytest.approx((0.9, 3.1))
    assert padded_range([2.0]) == (1.0, 3.0) and padded_range([]) == (0.0, 1.0)
