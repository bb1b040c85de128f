"""A loss that is not a number stops the chunk before it commits, naming the step and what to try."""

import pytest
import torch

from dreambooth_core.config import TrainingSettings
from dreambooth_core.errors import TrainingError
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.training.chunk import train_steps
from dreambooth_core.training.chunk import check_training_finite, first_bad_step
from dreambooth_core.families import load_model_parts
from dreambooth_core.training.trainer import Example, Trainer

# Finite, so accepted up front, but so large that the first update throws the weights to
# values whose activations overflow: training goes NaN for real, with no file touched.
DIVERGING = 1e30


def trainer(model_path: str, learning_rate: float) -> Trainer:
    pixels = [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(3)]
    settings = TrainingSettings(seed=3, learning_rate=learning_rate, text_encoder_steps=0)
    return Trainer(load_model_parts(model_path, torch.device("cpu")),
                   [Example(p, "photo of shrk man", "shrk") for p in pixels], settings, total_steps=6)


def test_a_diverging_chunk_stops_and_the_last_good_checkpoint_stays_the_latest(tiny_model_path, tmp_path):
    store = CheckpointStore(Session(str(tmp_path), "s"))
    good = trainer(tiny_model_path, 1e-4)
    train_steps(good, 0, 2, None, None)
    store.save(2, good.state_writers(), meta={})

    diverging = trainer(tiny_model_path, DIVERGING)
    diverging.load_state(store.load_latest())
    with pytest.raises(TrainingError) as raised:
        train_steps(diverging, 2, 6, None, None)
    message = str(raised.value)
    assert "training stopped: the loss became" in message and "at step 4" in message
    assert "Steps 3-6 were not saved (the checkpoint at step 2 stays the latest)" in message
    assert "--learning-rate (this run: 1e+30)" in message and "--mixed-precision fp16" in message
    assert store.latest_step() == 2


def test_weights_that_went_non_finite_after_the_last_loss_are_caught():
    losses = [torch.tensor(0.5), torch.tensor(0.4)]
    check_training_finite(losses, [torch.ones(3)], 0, 2, "Try again.")
    with pytest.raises(TrainingError, match="the weights became NaN or infinite by step 2. "
                                            "Steps 1-2 were not saved \\(nothing was committed\\)"):
        check_training_finite(losses, [torch.tensor([1.0, float("inf")])], 0, 2, "Try again.")


def test_the_first_bad_step_is_named_one_based():
    losses = [torch.tensor(v) for v in (0.5, float("inf"), float("nan"))]
    assert first_bad_step(losses, start=10) == 12
    assert first_bad_step(losses[:1], start=10) is None


def test_the_export_refuses_weights_that_are_not_finite_in_its_precision(tiny_model_path):
    from dreambooth_core.export.step_export import refuse_non_finite

    trainables = trainer(tiny_model_path, 1e-4).trainables
    refuse_non_finite(trainables, torch.float16, 4)
    weight = next(iter(trainables.denoiser.values()))
    with torch.no_grad():
        weight.view(-1)[0] = 1e5  # finite in fp32, beyond fp16's 65504
    refuse_non_finite(trainables, torch.float32, 4)
    with pytest.raises(TrainingError, match="at step 4 are NaN or infinite in torch.float16"):
        refuse_non_finite(trainables, torch.float16, 4)
