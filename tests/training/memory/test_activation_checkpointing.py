"""--gradient-checkpointing in the text-encoder phase: the encoders' layers are recomputed in the
backward pass, with dropout still off, and training takes the same weights as without it."""

import pytest
import torch

from dreambooth_core.config import RuntimeSettings, TrainingSettings
from dreambooth_core.families import load_model_parts
from dreambooth_core.training.trainer import Example, Trainer

CHECKPOINTED = RuntimeSettings(gradient_checkpointing=True)


def examples() -> list[Example]:
    pixels = [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(2)]
    return [Example(p, "photo of shrk man", "shrk") for p in pixels]


def trainer(model_path: str, runtime: RuntimeSettings, **options) -> Trainer:
    settings = TrainingSettings(seed=3, text_encoder_steps=2, **options)
    return Trainer(load_model_parts(model_path, torch.device("cpu")), examples(), settings, total_steps=2,
                   runtime=runtime)


def layer_calls(trainer: Trainer) -> int:
    """Forward calls of the text encoder's first MLP during one training step (a recomputed layer
    calls its children again in the backward pass)."""
    calls = []
    mlp = next(m for name, m in trainer.parts.text_encoder.named_modules() if name.endswith(".mlp"))
    handle = mlp.register_forward_pre_hook(lambda *args: calls.append(1))  # a recompute may stop inside it
    trainer.step(0)
    handle.remove()
    return len(calls)


@pytest.mark.parametrize("method", ["dreambooth", "lora"])
def test_the_text_encoder_is_recomputed_in_the_backward_pass(tiny_model_path, method):
    options = {"method": method, "lora_text_encoder": method == "lora"}
    plain = layer_calls(trainer(tiny_model_path, RuntimeSettings(), **options))
    assert layer_calls(trainer(tiny_model_path, CHECKPOINTED, **options)) == 2 * plain


@pytest.mark.parametrize("method", ["dreambooth", "lora"])
def test_checkpointing_trains_the_same_text_encoder_weights(tiny_model_path, method):
    options = {"method": method, "lora_text_encoder": method == "lora"}
    trained = {}
    for name, runtime in (("plain", RuntimeSettings()), ("checkpointed", CHECKPOINTED)):
        t = trainer(tiny_model_path, runtime, **options)
        for step in range(2):
            t.step(step)
        trained[name] = {k: v.detach().clone() for k, v in t.trainables.text_side.items()}
    assert trained["plain"], "the text encoder trains nothing"
    for key, value in trained["plain"].items():
        torch.testing.assert_close(trained["checkpointed"][key], value, rtol=1e-5, atol=1e-7, msg=key)


def test_dropout_stays_off_while_the_layers_checkpoint(tiny_model_path):
    t = trainer(tiny_model_path, CHECKPOINTED)
    for module in t.parts.text_encoder.modules():
        if hasattr(module, "dropout") and isinstance(module.dropout, float):
            module.dropout = 0.5  # attention dropout, applied only in training mode
    t._enter_phase(0)
    assert torch.equal(t.loss(0), t.loss(0))
