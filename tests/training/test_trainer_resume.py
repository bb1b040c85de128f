"""Resume at the trainer level, without Prefect: on the CPU here, on CUDA where there is one."""

import pytest
import torch

from tasks.session import Session
from tasks.training.checkpoint import CheckpointStore
from tasks.training.model_parts import load_model_parts
from tasks.training.trainer import Example, Hyperparameters, UNetTrainer

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])]
HP = Hyperparameters(seed=3, learning_rate=1e-4, max_grad_norm=1.0)


def trainer(model_path: str, device: str) -> UNetTrainer:
    pixels = [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(3)]
    examples = [Example(pixels=p, caption="photo of shrk", subject="shrk") for p in pixels]
    return UNetTrainer(load_model_parts(model_path, torch.device(device)), examples, HP)


@pytest.mark.parametrize("device", DEVICES)
def test_save_load_and_continue_equals_training_straight_through(tiny_model_path, tmp_path, device):
    straight = trainer(tiny_model_path, device)
    for step in range(6):
        straight.step(step)

    first = trainer(tiny_model_path, device)
    for step in range(3):
        first.step(step)
    store = CheckpointStore(Session(str(tmp_path), "s"))
    store.save(3, first.state_writers(), meta={})
    resumed = trainer(tiny_model_path, device)
    resumed.load_state(store.load_latest())
    for step in range(3, 6):
        resumed.step(step)

    expected, actual = straight.parts.unet.state_dict(), resumed.parts.unet.state_dict()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
