"""A quantised frozen base (--base-precision): what loads quantised, what trains on it, what its
exported LoRA does to the unquantised model, and what is refused before a run starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from dreambooth_core.config import TrainingSettings
from dreambooth_core.errors import ConfigError
from dreambooth_core.families import load_model_parts
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.families.family import ImageGeometry
from dreambooth_core.families.objectives import randn
from dreambooth_core.families.quantised import (
    BasePrecision,
    check_base_precision,
    is_quantised,
    is_quantised_weight,
)
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.training.methods import adapted_encoders
from dreambooth_core.training.trainer import Example, Trainer, checkpoint_weights, parts_with

CPU = torch.device("cpu")
CAPTION = "photo of shrk man"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    cache = tmp_path_factory.mktemp("cache")
    return {spec: fetch_model(spec, cache) for spec in ("tiny", "tiny-flux")}


def linear_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in module.modules() if isinstance(m, torch.nn.Linear)]


@pytest.mark.parametrize("spec", ["tiny", "tiny-flux"])
def test_int8_loads_denoiser_and_text_encoders_quantised_and_training_keeps_them(models, spec):
    parts = load_model_parts(models[spec].path, CPU, base=BasePrecision("int8", "bf16"))
    for frozen in (parts.denoiser, *parts.text_encoders):
        assert is_quantised(frozen)
        assert all(is_quantised_weight(w) for w in linear_weights(frozen))
    assert not is_quantised(parts.vae)  # small, and it encodes each image once
    int8_bytes = sum(w.qdata.numel() for w in linear_weights(parts.denoiser))
    fp32_bytes = sum(4 * w.numel() for w in linear_weights(load_model_parts(models[spec].path, CPU).denoiser))
    assert int8_bytes * 4 == fp32_bytes

    quantised_types = {type(w) for w in linear_weights(parts.denoiser)}
    layers = len(linear_weights(parts.denoiser))
    settings = TrainingSettings(method="lora", base_precision="int8", mixed_precision="bf16", lora_rank=4,
                                text_encoder_steps=0)
    trainer = Trainer(parts, examples(models[spec].family.resolution), settings, total_steps=1)
    trainer.step(0)
    # hold_frozen cast the other frozen layers to bf16 and left the quantised weights as they were
    base = [w for w in linear_weights(parts.denoiser) if is_quantised_weight(w)]
    assert {type(w) for w in base} == quantised_types and len(base) == layers
    embeddings = [m.weight for e in parts.text_encoders for m in e.modules() if isinstance(m, torch.nn.Embedding)]
    assert embeddings and all(w.dtype == torch.bfloat16 for w in embeddings)
    assert all(p.dtype == torch.float32 for p in trainer.trainables.named().values())  # LoRA in fp32


def examples(resolution: int) -> list[Example]:
    return [Example(torch.rand(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(i)) * 2 - 1,
                    CAPTION, "shrk") for i in range(2)]


@pytest.mark.parametrize("spec", ["tiny", "tiny-flux"])
def test_lora_trained_on_int8_base_moves_the_unquantised_model_as_it_moved_the_quantised_one(
        models, spec, tmp_path):
    """Train LoRA on the int8 base, export it as a run does (the checkpoint's adapters on the base model's
    own fp32 weights, the family's LoRA files), load those files into a fresh fp32 diffusers pipeline as
    a user does, and compare what the LoRA changes in the denoiser's prediction on each model.

    Tolerance: the two changes may differ by 5% of the change (relative L2). The LoRA's change is
    computed through different base weights: int8 weight-only rounds each weight to 1/254 of its row's
    largest (0.2% of it at most), and the change is linear in the adapters but passes through the base's
    later layers. Measured here: 0.3% (tiny SD) and 0.6% (tiny FLUX.1), so 5% leaves room for other
    seeds and library versions, while a LoRA file that did not apply, or applied at another scale or to
    other layers, is off by 100% or more."""
    model = models[spec]
    settings = TrainingSettings(method="lora", base_precision="int8", lora_rank=4, learning_rate=2e-2,
                                text_encoder_steps=0, seed=3)
    trainer = Trainer(load_model_parts(model.path, CPU, base=BasePrecision("int8")),
                      examples(model.family.resolution), settings, total_steps=6)
    for step in range(6):
        trainer.step(step)
    store = CheckpointStore(Session(str(tmp_path), "s"))
    store.save(6, trainer.state_writers(), meta={})
    parts, trainables = parts_with(model.path, settings, ["shrk"], checkpoint_weights(store.load_latest()), CPU)
    assert not is_quantised(parts.denoiser)
    family = parts.family
    family.write_lora(parts.denoiser, adapted_encoders(parts, trainables), "shrk", torch.float32, tmp_path / "out")
    lora_file = next((tmp_path / "out").glob("*.safetensors"))

    batch, condition, images = fixed_inputs(trainer, parts)
    quantised = trainer.parts.denoiser.eval()
    with torch.no_grad():
        quantised_lora = family.predict(quantised, batch, condition, images)
        quantised.disable_adapters()
        quantised_base = family.predict(quantised, batch, condition, images)
        pipeline = family.pipeline(model.path, CPU)
        full = getattr(pipeline, family.denoiser)
        full_base = family.predict(full, batch, condition, images)
        pipeline.load_lora_weights(str(lora_file))
        full_lora = family.predict(full, batch, condition, images)

    moved_quantised, moved_full = quantised_lora - quantised_base, full_lora - full_base
    quantisation_error = (full_base - quantised_base).norm()
    assert moved_quantised.norm() > 3 * quantisation_error, "the LoRA barely moved the output"
    assert (moved_full - moved_quantised).norm() <= 0.05 * moved_quantised.norm()


def fixed_inputs(trainer: Trainer, parts):
    """A noisy batch of the trainer's first example and the caption's conditioning from the fp32 encoders."""
    generator = torch.Generator().manual_seed(7)
    mean, std = trainer.latents.posterior(("i", 0), trainer.examples[0].pixels, False)
    latents = trainer.objective.latents(mean, std, generator, CPU)
    batch = trainer.objective.noisy_batch(latents, randn(latents.shape, generator, CPU), generator, CPU)
    condition = parts.family.encode(parts, [CAPTION], parts.text_encoders, CPU)
    height, width = trainer.examples[0].pixels.shape[-2:]
    return batch, condition, [ImageGeometry(height, width)]


# -- what is refused before a run starts ------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["int8", "fp8", "nf4"])
def test_dreambooth_on_a_quantised_base_is_refused(precision):
    with pytest.raises(ConfigError, match="--method dreambooth trains the denoiser's own weights"):
        check_base_precision(precision, "dreambooth", "cpu", "no")


@pytest.mark.parametrize("precision, library", [("nf4", "bitsandbytes"), ("int8", "torchao"), ("fp8", "torchao")])
def test_a_missing_library_is_named(monkeypatch, precision, library):
    monkeypatch.setitem(sys.modules, library, None)  # how Python marks a package that cannot be imported
    with pytest.raises(ConfigError, match=f"needs the {library} package, which is not installed: pip install"):
        check_base_precision(precision, "lora", "cuda", "bf16")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_half_base_needs_mixed_precision(precision):
    with pytest.raises(ConfigError, match=f"--mixed-precision {precision}"):
        check_base_precision(precision, "dreambooth", "cpu", "no")
    check_base_precision(precision, "dreambooth", "cpu", precision)  # held in half under autocast: fine


@pytest.mark.parametrize("precision", ["auto", "int8", "fp8"])
def test_what_runs_on_the_cpu_is_accepted(precision):
    check_base_precision(precision, "lora", "cpu", "no")
    check_base_precision(precision, "textual-inversion", "cpu", "no")
