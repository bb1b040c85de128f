"""Randomness is a function of (seed, step): what makes resume exact."""

import torch

from dreambooth_core.training.data.randomness import (balanced_example_index, example_index,
                                                      generator_for)


def test_each_epoch_visits_every_example_once():
    for epoch in range(3):
        seen = [example_index(7, epoch * 5 + i, 5) for i in range(5)]
        assert sorted(seen) == list(range(5))


def test_orders_differ_between_epochs_and_seeds():
    orders = {tuple(example_index(seed, e * 6 + i, 6) for i in range(6)) for seed in (1, 2) for e in range(4)}
    assert len(orders) > 1


def test_draws_depend_only_on_seed_step_and_stream():
    a = torch.randn(4, generator=generator_for(3, 10, "noise"))
    torch.randn(100)  # global RNG use in between changes nothing
    assert torch.equal(a, torch.randn(4, generator=generator_for(3, 10, "noise")))
    assert not torch.equal(a, torch.randn(4, generator=generator_for(3, 11, "noise")))
    assert not torch.equal(a, torch.randn(4, generator=generator_for(3, 10, "other")))


def test_one_subject_samples_exactly_as_before():
    assert [balanced_example_index(3, s, [list(range(5))]) for s in range(20)] == \
        [example_index(3, s, 5) for s in range(20)]


def test_subjects_are_sampled_equally_however_many_photos_each_has():
    groups = [[0, 1], [2, 3, 4, 5, 6, 7, 8, 9]]
    drawn = [balanced_example_index(11, s, groups) for s in range(40)]
    for round_start in range(0, 40, 2):  # every round of 2 steps visits both subjects
        pair = drawn[round_start:round_start + 2]
        assert sum(i in groups[0] for i in pair) == 1
    visits = [i for i in drawn if i in groups[1]]
    assert sorted(visits[:8]) == groups[1]  # a subject's first 8 visits show each of its 8 photos once
    assert drawn == [balanced_example_index(11, s, groups) for s in range(40)]  # pure in (seed, step)
