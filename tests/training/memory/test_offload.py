"""--offload: the trained denoiser's blocks kept on the host, each visiting the device in turn.

On the CPU the device copies are CPU tensors apart from the host copies: every copy in and out,
every optimizer-state move and every hook runs as on a GPU, so a weight that missed its update,
an update lost on the way back or a step on a stale copy shows as a different weight."""

import os
from pathlib import Path

import pytest
import torch

from dreambooth_core.config import RuntimeSettings, TrainingSettings
from dreambooth_core.errors import ConfigError
from dreambooth_core.families import load_model_parts
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.training.memory.offload import check_trainer_offload, offload_units
from dreambooth_core.training.plan import check_settings
from dreambooth_core.training.trainer import Example, Trainer

STEPS = 2
OFFLOAD = RuntimeSettings(offload=True)


SLOW = pytest.mark.slow


def models(fast: str):
    """Both tiny models, the one besides `fast` in the slow tier (each run takes tens of seconds)."""
    return pytest.mark.parametrize("model", [m if m == fast else pytest.param(m, marks=SLOW)
                                             for m in ("tiny", "tiny-flux")], indirect=True)


@pytest.fixture(scope="module")
def model(request) -> str:
    return fetch_model(request.param, Path(os.environ["DREAMBOOTH_CACHE"])).path


def examples() -> list[Example]:
    pixels = [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(2)]
    return [Example(p, "photo of shrk man", "shrk") for p in pixels]


def settings(**options) -> TrainingSettings:
    return TrainingSettings(**{"seed": 3, "learning_rate": 1e-4, "text_encoder_steps": 1,
                               "step_in_backward": True, **options})


def trainer(model: str, runtime: RuntimeSettings, **options) -> Trainer:
    parts = load_model_parts(model, torch.device("cpu"))
    return Trainer(parts, examples(), settings(**options), STEPS, runtime)


def train(trainer: Trainer, start: int = 0, end: int = STEPS) -> Trainer:
    for step in range(start, end):
        trainer.step(step)
    return trainer


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.trainables.named().items()}


def assert_same(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    different = [k for k, v in got.items() if not torch.equal(v, expected[k])]
    assert not different, f"{len(different)} of {len(got)} weights differ, e.g. {different[:3]}"


# Gradient checkpointing with the text encoders training: tiny-flux trains different weights from run
# to run on the CPU with or without --offload (its text encoders' recomputation); they are frozen here.
@pytest.mark.parametrize("runtime, options", [
    (OFFLOAD, {}), pytest.param(OFFLOAD.model_copy(update={"gradient_checkpointing": True}),
                                {"text_encoder_steps": 0}, marks=SLOW)],
    ids=["plain", "gradient checkpointing"])
@models(fast="tiny")
def test_it_trains_bit_equal_weights(model, runtime, options):
    """UNet (or transformer) and text encoder alike, with and without recomputed activations."""
    usual = trainer(model, runtime.model_copy(update={"offload": False}), **options)
    before = weights(usual)
    expected = weights(train(usual))
    assert sum(not torch.equal(v, before[k]) for k, v in expected.items()) > len(expected) // 2
    offloaded = train(trainer(model, runtime, **options))
    assert_same(weights(offloaded), expected)
    with torch.no_grad():  # a forward pass without a backward (samples): the trained weights, then home
        assert torch.equal(offloaded.loss(STEPS), usual.loss(STEPS))
    assert not any(unit.weights_in or unit.state_in for unit in offloaded.offload.units)


@models(fast="tiny-flux")
def test_between_steps_the_blocks_and_their_optimizer_state_are_on_the_host(model):
    """Each block's weights sit in their host copies (no device copy left), with the optimizer
    state that trained them; what is outside the blocks is not offloaded."""
    offloaded = train(trainer(model, OFFLOAD), 0, 1)
    units = offloaded.offload.units
    assert len(units) == len(offload_units(offloaded.parts.denoiser)) > 1
    blocks = {id(p) for u in units for p in u.parameters}
    assert len(blocks) > len(list(offloaded.parts.denoiser.parameters())) // 2
    for unit in units:
        assert not unit.weights_in and not unit.state_in
        for parameter, home, optimizer, state_home in zip(unit.parameters, unit.homes, unit.optimizers,
                                                          unit.state_homes):
            assert parameter.data.data_ptr() == home.data_ptr()
            state = optimizer.state[parameter]
            assert state and all(state[key] is value for key, value in state_home.items())
            assert {k for k, v in state.items() if torch.is_tensor(v)} == state_home.keys()


@pytest.mark.slow
@models(fast="tiny")
@pytest.mark.parametrize("saved_with", [OFFLOAD, RuntimeSettings()], ids=["saved with offload", "without"])
def test_a_resumed_run_trains_the_weights_of_an_uninterrupted_one(model, saved_with):
    """The state of step 1 saved through the checkpoint writers (with offload: weights and optimizer
    state read from their host copies), loaded into a new offloading trainer, which trains on."""
    import io

    from dreambooth_core.session.checkpoints import Checkpoint

    expected = weights(train(trainer(model, OFFLOAD)))
    first = train(trainer(model, saved_with), 0, 1)
    files = {}
    for name, write in first.state_writers(copy=False).items():
        buffer = io.BytesIO()
        write(buffer)
        files[name] = buffer.getvalue()
    resumed = trainer(model, OFFLOAD)
    resumed.load_state(Checkpoint(step=1, files=files, meta={}))
    assert_same(weights(train(resumed, 1, STEPS)), expected)


@pytest.mark.parametrize("options, runtime, needs", [
    ({"step_in_backward": False}, {}, "--step-in-backward"),
    ({"method": "lora"}, {}, "--method dreambooth"),
    ({"ema_decay": 0.9}, {}, "--ema-decay 0"),
    ({}, {"compile": True}, "no --compile")])
def test_what_it_cannot_train_with_is_refused(options, runtime, needs):
    training = TrainingSettings(**{"step_in_backward": True, **options})
    with pytest.raises(ConfigError, match=f"--offload needs .*{needs}"):
        check_trainer_offload(training, RuntimeSettings(offload=True, **runtime))


def test_on_the_cpu_it_is_refused_as_having_nothing_to_offload_to():
    with pytest.raises(ConfigError, match="trains on cpu, where there is nothing to offload to"):
        check_settings(TrainingSettings(step_in_backward=True), OFFLOAD.model_copy(update={"device": "cpu"}))
