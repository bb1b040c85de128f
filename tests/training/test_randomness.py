"""Randomness is a function of (seed, step): what makes resume exact."""

import torch

from tasks.training.randomness import example_index, generator_for


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
