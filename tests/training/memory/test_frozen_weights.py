"""Under mixed precision the weights a run never trains are held in half precision: less
memory, the same training up to rounding, and what trains stays fp32."""

from pathlib import Path

import numpy as np
import pytest
import torch

from dreambooth_core.config import TrainingSettings
from dreambooth_core.generation.pipeline import build_pipeline, render
from dreambooth_core.families.sd_tiny import build_tiny_sdxl_model
from dreambooth_core.training.memory import frozen_weights
from dreambooth_core.training.memory.frozen_weights import HELD_IN_HALF
from dreambooth_core.training.memory.estimate import estimate_training_memory
from dreambooth_core.families import load_model_parts
from dreambooth_core.training.trainer import Example, Trainer


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory) -> Path:
    return build_tiny_sdxl_model(tmp_path_factory.mktemp("tiny-sdxl"))


def settings(method: str, precision: str) -> TrainingSettings:
    return TrainingSettings(seed=5, learning_rate=1e-3, text_encoder_steps=0, method=method,
                            lora_text_encoder=method == "lora", mixed_precision=precision)


def make_trainer(path, method: str, precision: str) -> Trainer:
    examples = [Example(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) * 2 - 1,
                        "photo of shrk man", "shrk") for i in range(2)]
    return Trainer(load_model_parts(str(path), torch.device("cpu")), examples, settings(method, precision),
                   total_steps=4)


def frozen_dtypes(trainer: Trainer) -> dict[str, set[torch.dtype]]:
    """The dtypes of the untrained parameters: of matrix and embedding layers, and of the rest."""
    trained = {id(p) for p in trainer.trainables.named().values()}
    found = {"matrices": set(), "others": set()}
    for module in (trainer.parts.denoiser, *trainer.parts.text_encoders):
        for layer in module.modules():
            kind = "matrices" if isinstance(layer, HELD_IN_HALF) else "others"
            found[kind] |= {p.dtype for p in layer.parameters(recurse=False) if id(p) not in trained}
    return found


def learned(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.trainables.named().items()}


@pytest.mark.parametrize("method", ["lora", "textual-inversion"])
def test_under_bf16_the_frozen_model_is_bf16_and_trains_as_the_fp32_one_does(sdxl, method):
    half, full = make_trainer(sdxl, method, "bf16"), make_trainer(sdxl, method, "no")
    assert frozen_dtypes(half) == {"matrices": {torch.bfloat16}, "others": {torch.float32}}
    assert frozen_dtypes(full) == {"matrices": {torch.float32}, "others": {torch.float32}}
    assert {p.dtype for p in half.trainables.named().values()} == {torch.float32}

    # Autocast computes the products in bf16 either way: the same steps, up to rounding, as the
    # run that keeps the frozen weights in fp32.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(frozen_weights, "HELD_IN_HALF", ())
        fp32_held = make_trainer(sdxl, method, "bf16")
    assert frozen_dtypes(fp32_held)["matrices"] == {torch.float32}
    start = learned(half)
    for step in range(3):
        half.step(step)
        fp32_held.step(step)
    a, b = learned(half), learned(fp32_held)
    assert all(not torch.equal(a[k], start[k]) for k in a)
    step_half = torch.cat([(a[k] - start[k]).flatten() for k in a])
    step_full = torch.cat([(b[k] - start[k]).flatten() for k in a])
    # the same update, up to rounding (Adam magnifies the rounding of tiny gradients)
    assert torch.nn.functional.cosine_similarity(step_half, step_full, dim=0) > 0.98


def test_dreambooth_keeps_what_it_trains_in_fp32_and_holds_an_untrained_text_encoder_in_bf16(tiny_model_path):
    with_phase = Trainer(load_model_parts(tiny_model_path, torch.device("cpu")), [], TrainingSettings(
        method="dreambooth", text_encoder_steps=2, mixed_precision="bf16"), total_steps=4)
    assert frozen_dtypes(with_phase) == {"matrices": set(), "others": set()}  # everything trains
    assert {p.dtype for p in with_phase.trainables.named().values()} == {torch.float32}
    unet_only = make_trainer(tiny_model_path, "dreambooth", "bf16")
    assert {p.dtype for p in unet_only.parts.denoiser.parameters()} == {torch.float32}
    encoder = unet_only.parts.text_encoder
    assert encoder.get_input_embeddings().weight.dtype == torch.bfloat16
    assert frozen_dtypes(unet_only) == {"matrices": {torch.bfloat16}, "others": {torch.float32}}


@pytest.mark.slow  # two SDXL-architecture estimates (about 5 s)
def test_the_estimate_drops_by_half_the_frozen_matrices(sdxl):
    half = estimate_training_memory(sdxl, settings("lora", "bf16"), 64)
    full = estimate_training_memory(sdxl, settings("lora", "no"), 64)
    trainer = make_trainer(sdxl, "lora", "no")
    trained = {id(p) for p in trainer.trainables.named().values()}
    # LoRA on the UNet alone: the text encoders wait in host memory between steps (text_embeddings.py)
    frozen_matrix_bytes = sum(p.numel() * 4 for m in (trainer.parts.denoiser,)
                              for layer in m.modules() if isinstance(layer, HELD_IN_HALF)
                              for p in layer.parameters(recurse=False) if id(p) not in trained)
    saved = full.between_steps - half.between_steps
    assert saved == pytest.approx(frozen_matrix_bytes / 2, rel=0.02)
    assert half.peak_bytes < full.peak_bytes - frozen_matrix_bytes / 2 * 0.9


def test_samples_render_from_a_model_held_in_bf16_and_the_vae_decodes_outside_autocast(sdxl):
    trainer = make_trainer(sdxl, "lora", "bf16")
    trainer.step(0)
    parts = trainer.parts
    pipeline = build_pipeline(str(sdxl), "cpu", parts)
    image = np.asarray(render(pipeline, "photo of shrk man", [torch.Generator().manual_seed(0)], 64, steps=3)[0])
    assert image.shape == (64, 64, 3) and image.std() > 0
    # An fp32 VAE called inside someone's half autocast still decodes in fp32 (SDXL's overflows
    # in fp16 into black images on a GPU).
    with torch.autocast("cpu", dtype=torch.bfloat16):
        decoded = pipeline.vae.decode(torch.randn(1, 4, 8, 8, dtype=torch.bfloat16)).sample
    assert decoded.dtype == torch.float32
