"""--step-in-backward: each weight updated as soon as its gradient exists, that gradient freed."""

import pytest
import torch

from dreambooth_core.config import RuntimeSettings, TrainingSettings
from dreambooth_core.errors import ConfigError
from dreambooth_core.families import write_config_folder
from dreambooth_core.training.memory.estimate import estimate_training_memory
from dreambooth_core.families import load_model_parts
from dreambooth_core.training.trainer import Example, Trainer

STEPS = 4


def examples() -> list[Example]:
    pixels = [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(3)]
    return [Example(p, "photo of shrk man", "shrk") for p in pixels]


def trained(model_path: str, runtime: RuntimeSettings = RuntimeSettings(), **options) -> Trainer:
    settings = TrainingSettings(seed=5, learning_rate=1e-4, text_encoder_steps=2, **options)
    trainer = Trainer(load_model_parts(model_path, torch.device("cpu")), examples(), settings, total_steps=STEPS,
                      runtime=runtime)
    for step in range(STEPS):
        trainer.step(step)
    return trainer


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.trainables.named().items()}


@pytest.mark.parametrize("runtime", [RuntimeSettings(), RuntimeSettings(gradient_checkpointing=True)],
                         ids=["plain", "gradient checkpointing"])
def test_without_clipping_it_trains_the_same_weights_as_the_usual_step(tiny_model_path, runtime):
    """Each weight's AdamW update is the one the usual step takes, UNet and text encoder alike."""
    usual = weights(trained(tiny_model_path, runtime, max_grad_norm=1e6))
    in_backward = trained(tiny_model_path, runtime, max_grad_norm=1e6, step_in_backward=True)
    base = weights(Trainer(load_model_parts(tiny_model_path, torch.device("cpu")), examples(),
                           TrainingSettings(text_encoder_steps=2), total_steps=STEPS))
    assert any(not torch.equal(usual[k], base[k]) for k in usual if "text_model" in k or "encoder" in k)
    different = [k for k, v in weights(in_backward).items() if not torch.equal(v, usual[k])]
    assert not different, f"{len(different)} of {len(usual)} weights differ, e.g. {different[:3]}"
    assert all(p.grad is None for p in in_backward.trainables.named().values()), "a gradient was kept"


def test_each_gradient_is_clipped_on_its_own_before_its_update(tiny_model_path, monkeypatch):
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording(parameters, max_norm, *args, **kwargs):
        total = clip(parameters, max_norm, *args, **kwargs)
        norms.append((len(parameters), float(torch.linalg.vector_norm(parameters[0].grad))))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    trainer = trained(tiny_model_path, max_grad_norm=1e-3, step_in_backward=True)
    trained_count = len(trainer.trainables.denoiser)
    assert len(norms) >= STEPS * trained_count  # once per weight and step (text encoder too, in its phase)
    assert all(count == 1 and norm <= 1e-3 * 1.001 for count, norm in norms)


def test_fp16_that_auto_resolved_to_is_refused_before_training(tiny_model_path, monkeypatch):
    from dreambooth_core.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "resolve_precision", lambda precision, device: "fp16")
    with pytest.raises(ConfigError, match="cannot train in fp16.*bf16"):
        Trainer(load_model_parts(tiny_model_path, torch.device("cpu")), examples(),
                TrainingSettings(step_in_backward=True), total_steps=STEPS)


@pytest.mark.slow  # the full-size SD 1.5 UNet on fake tensors (about 10 s)
def test_full_size_dreambooth_needs_about_the_unets_gradients_less_memory(tmp_path):
    """SD 1.5 UNet-only DreamBooth (estimated on fake tensors): the gradients, 3.2 GiB in fp32, are
    never all held at once."""
    model = str(write_config_folder("sd15", tmp_path / "sd15"))
    settings = TrainingSettings(text_encoder_steps=0, mixed_precision="bf16")
    runtime = RuntimeSettings(gradient_checkpointing=True)
    usual = estimate_training_memory(model, settings, 512, runtime)
    in_backward = estimate_training_memory(model, settings.model_copy(update={"step_in_backward": True}), 512, runtime)
    gradients = usual.checkpoint_bytes / 3  # weights + two AdamW moments, all fp32
    assert usual.peak_bytes - in_backward.peak_bytes > 0.8 * gradients
