"""Which examples a micro-batch uses: with several processes, each process's rows of the draws
one process makes for the whole batch; with aspect-ratio buckets, one bucket per batch."""

import torch

from dreambooth_core.training.data.batches import draw_micro_batch

RANK_GROUPS = [[0, 1, 2], [3, 4]]         # two subjects' photos
RANK_CLASS_GROUPS = [[0, 1, 2, 3], [4, 5]]  # their class images


def test_each_process_draws_its_rows_of_one_process_batch_and_the_noise_after_them():
    one = draw_micro_batch(7, 5, 1, 4, 2, RANK_GROUPS, RANK_CLASS_GROUPS, flip=True)
    ranks = [draw_micro_batch(7, 5, 1, 2, 2, RANK_GROUPS, RANK_CLASS_GROUPS, flip=True, rank=r, world=2)
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
    draw = draw_micro_batch(7, 5, 0, 2, 1, RANK_GROUPS, [], flip=False)
    assert draw.rows is None and len(draw.instances) == 2 and draw.classes == []
    values = torch.ones(2, 3)
    assert draw.spread(values) is values and draw.mine(values) is values


# Six photos of two subjects in three buckets; each subject's class images come in each bucket it has.
BUCKETS = [0, 0, 1, 2, 1, 1]
GROUPS = [[0, 1, 2], [3, 4, 5]]
CLASS_BUCKETS = [0, 1, 1, 2, 2, 1]
CLASS_GROUPS = [[0, 1, 2], [3, 4, 5]]


def draws(steps: int, batch_size: int, buckets=BUCKETS, class_buckets=CLASS_BUCKETS, seed: int = 5):
    return [draw_micro_batch(seed, step, micro, batch_size, 2, GROUPS, CLASS_GROUPS, True, 0, 1,
                             buckets, class_buckets) for step in range(steps) for micro in range(2)]


def test_no_batch_mixes_buckets_and_class_images_come_from_the_instances_bucket():
    for draw in draws(30, batch_size=3):
        assert len({BUCKETS[i] for i in draw.instances}) == 1, draw.instances
        assert [CLASS_BUCKETS[c] for c in draw.classes] == [BUCKETS[i] for i in draw.instances]
        assert len(draw.flips) == 6


def test_every_bucket_and_photo_is_visited():
    seen = [i for draw in draws(12, batch_size=2) for i in draw.instances]
    assert set(seen) == set(range(6))


def test_the_draw_is_a_function_of_seed_and_step():
    """What resume relies on: drawing step 7 again, alone, gives what the run drew at step 7."""
    run = draws(10, batch_size=2)
    again = draw_micro_batch(5, 7, 1, 2, 2, GROUPS, CLASS_GROUPS, True, 0, 1, BUCKETS, CLASS_BUCKETS)
    assert (again.instances, again.classes, again.flips) == (run[15].instances, run[15].classes, run[15].flips)
    other_seed = draws(10, batch_size=2, seed=6)
    assert [d.instances for d in run] != [d.instances for d in other_seed]


def test_one_bucket_draws_what_a_run_without_buckets_draws():
    """Every photo in one bucket (squares, or --buckets off): the data order of today's sessions."""
    plain = draws(10, batch_size=3, buckets=None, class_buckets=None)
    one = draws(10, batch_size=3, buckets=[0] * 6, class_buckets=[0] * 6)
    assert [(d.instances, d.classes, d.flips) for d in plain] == [(d.instances, d.classes, d.flips) for d in one]


def test_with_batch_1_buckets_keep_the_plain_data_order():
    plain = draws(10, batch_size=1, buckets=None, class_buckets=None)
    bucketed = draws(10, batch_size=1)
    assert [d.instances for d in plain] == [d.instances for d in bucketed]


def test_with_buckets_processes_take_their_rows_of_one_process_batch_from_one_bucket():
    one = draw_micro_batch(5, 3, 1, 4, 2, GROUPS, CLASS_GROUPS, True, 0, 1, BUCKETS, CLASS_BUCKETS)
    ranks = [draw_micro_batch(5, 3, 1, 2, 2, GROUPS, CLASS_GROUPS, True, r, 2, BUCKETS, CLASS_BUCKETS)
             for r in (0, 1)]
    assert ranks[0].instances + ranks[1].instances == one.instances
    assert ranks[0].classes + ranks[1].classes == one.classes
    assert len({BUCKETS[i] for i in one.instances}) == 1
