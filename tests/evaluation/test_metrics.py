"""The paper's metrics against cosine similarities worked out by hand."""

import math

import pytest
import torch

from dreambooth_core.evaluation.metrics import prompt_fidelity, subject_fidelity


def test_subject_fidelity_is_the_mean_over_every_generated_and_real_pair():
    generated = torch.tensor([[1.0, 0.0], [2.0, 2.0]])
    real = torch.tensor([[5.0, 0.0], [0.0, 0.5]])  # lengths do not matter, directions do
    # image 1: cos 1 and 0 -> 0.5; image 2 (45 degrees): cos 1/sqrt2 with both -> 0.7071
    value = subject_fidelity(generated, real)
    assert value.mean == pytest.approx((0.5 + 1 / math.sqrt(2)) / 2)
    assert value.spread == pytest.approx((1 / math.sqrt(2) - 0.5) / 2)


def test_prompt_fidelity_pairs_each_image_with_its_own_prompt():
    images = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    prompts = torch.tensor([[4.0, 3.0], [0.0, -5.0]])
    # (12 + 12) / 25 = 0.96, and opposite directions: -1
    value = prompt_fidelity(images, prompts)
    assert value.mean == pytest.approx((0.96 - 1) / 2)
    assert value.spread == pytest.approx(0.98)


def test_one_generated_image_has_no_spread():
    value = subject_fidelity(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]))
    assert (value.mean, value.spread) == (pytest.approx(1 / math.sqrt(2)), 0.0)


@pytest.mark.parametrize("generated, other", [
    (torch.ones(2, 3), torch.ones(2, 4)),  # widths differ
    (torch.ones(0, 3), torch.ones(2, 3)),  # no image
])
def test_embeddings_that_cannot_be_compared_are_refused(generated, other):
    with pytest.raises(ValueError, match="expected non-empty"):
        subject_fidelity(generated, other)


def test_prompt_fidelity_needs_one_prompt_per_image():
    with pytest.raises(ValueError, match="one prompt embedding per image"):
        prompt_fidelity(torch.ones(3, 2), torch.ones(2, 2))
