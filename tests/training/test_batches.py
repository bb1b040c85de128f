"""Several processes take their rows of the draws one process makes for the whole batch."""

import torch

from dreambooth_core.training.batches import draw_micro_batch

GROUPS = [[0, 1, 2], [3, 4]]         # two subjects' photos
CLASS_GROUPS = [[0, 1, 2, 3], [4, 5]]  # their class images


def test_each_process_draws_its_rows_of_one_process_batch_and_the_noise_after_them():
    one = draw_micro_batch(7, 5, 1, 4, 2, GROUPS, CLASS_GROUPS, flip=True)
    ranks = [draw_micro_batch(7, 5, 1, 2, 2, GROUPS, CLASS_GROUPS, flip=True, rank=r, world=2)
             for r in (0, 1)]
    assert ranks[0].instances + ranks[1].instances == one.instances
    assert ranks[0].classes + ranks[1].classes == one.classes
    assert ranks[1].rows == [2, 3, 6, 7] and ranks[1].flips == [one.flips[r] for r in ranks[1].rows]
    # The generator continues identically: a draw over the whole batch, each keeping its rows.
    noise = torch.randn(8, 3, generator=one.generator)
    for draw in ranks:
        mine = torch.arange(4.0)[:, None].expand(4, 3)
        assert torch.equal(draw.mine(draw.spread(mine)), mine)
        assert torch.equal(draw.mine(torch.randn(8, 3, generator=draw.generator)), noise[draw.rows])


def test_one_process_keeps_its_draws_whole():
    draw = draw_micro_batch(7, 5, 0, 2, 1, GROUPS, [], flip=False)
    assert draw.rows is None and len(draw.instances) == 2 and draw.classes == []
    values = torch.ones(2, 3)
    assert draw.spread(values) is values and draw.mine(values) is values
