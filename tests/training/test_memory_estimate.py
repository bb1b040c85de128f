"""The memory estimate: a real training step on fake tensors allocates what it allocates on real ones."""

import os
from pathlib import Path

import pytest

from dreambooth_core.config import RuntimeSettings, TrainingSettings
from dreambooth_core.errors import ConfigError
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.training.memory_estimate import estimate_training_memory

METHODS = {"dreambooth": {"text_encoder_steps": 1}, "lora": {"lora_text_encoder": True},
           "textual-inversion": {}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return fetch_model("tiny", tmp_path_factory.mktemp("cache")).path


@pytest.mark.slow  # a real and a fake training step per method (seconds each)
@pytest.mark.parametrize("method", METHODS)
def test_fake_tensors_allocate_what_real_ones_do(method, tiny):
    settings = TrainingSettings(steps=4, method=method, **METHODS[method])
    fake = estimate_training_memory(tiny, settings, 64, prior=True)
    real = estimate_training_memory(tiny, settings, 64, prior=True, fake=False)
    assert fake.peak_bytes == pytest.approx(real.peak_bytes, rel=0.01)
    assert fake.between_steps == pytest.approx(real.between_steps, rel=0.01)


@pytest.mark.slow  # eight estimates
def test_what_trains_and_what_is_kept_decide_the_peak(tiny):
    def peak(method="dreambooth", resolution=64, runtime=RuntimeSettings(), **options):
        settings = TrainingSettings(steps=4, method=method, **{"text_encoder_steps": 0, **options})
        return estimate_training_memory(tiny, settings, resolution, runtime=runtime).peak_bytes

    assert peak() > peak("lora") > peak("textual-inversion")
    assert peak(text_encoder_steps=1) > peak()  # the text encoder's gradients and AdamW moments
    assert peak(ema_decay=0.999) > peak()  # an fp32 copy of the UNet
    # at a resolution where activations dominate, checkpointing them lowers the peak
    assert peak("lora", 256, RuntimeSettings(gradient_checkpointing=True)) < peak("lora", 256)


@pytest.mark.slow  # three estimates
def test_the_model_is_counted_as_the_trainer_holds_it_before_the_move(tiny):
    """What `dreambooth plan` counts on the host: under bf16 LoRA the frozen model is already in half."""
    def held(precision: str, fake: bool = True) -> int:
        settings = TrainingSettings(steps=4, method="lora", mixed_precision=precision)
        return estimate_training_memory(tiny, settings, 64, fake=fake).model_bytes

    assert held("bf16") == held("bf16", fake=False)
    assert held("no") * 0.45 < held("bf16") < held("no") * 0.75  # the VAE and the norms stay fp32


# The transformer families: FLUX.1's text-encoder phase trains CLIP-L; klein's trains none.
FLOW_CASES = [("dreambooth", "no", {"text_encoder_steps": 1}), ("lora", "no", {"lora_text_encoder": True}),
              ("lora", "bf16", {})]


@pytest.fixture(scope="module")
def cache() -> Path:
    return Path(os.environ["DREAMBOOTH_CACHE"])  # the test session's: each tiny model is built once


@pytest.mark.slow  # a real and a fake training step per case (seconds each)
@pytest.mark.parametrize("spec", ["tiny-flux", "tiny-klein"])
@pytest.mark.parametrize("method, precision, options", FLOW_CASES)
def test_fake_tensors_allocate_what_real_ones_do_for_transformers(spec, method, precision, options, cache):
    model = fetch_model(spec, cache)
    settings = TrainingSettings(steps=4, method=method, mixed_precision=precision, **options)
    fake = estimate_training_memory(model.path, settings, model.family.resolution, prior=True)
    real = estimate_training_memory(model.path, settings, model.family.resolution, prior=True, fake=False)
    assert fake.peak_bytes == pytest.approx(real.peak_bytes, rel=0.01)
    assert fake.between_steps == pytest.approx(real.between_steps, rel=0.01)
    # Every part the Trainer holds, the frozen text encoders included, stays alive between steps.
    assert fake.between_steps >= fake.model_bytes


@pytest.mark.slow  # builds two tiny models (seconds)
@pytest.mark.parametrize("spec", ["tiny-flux", "tiny-klein"])
def test_textual_inversion_of_a_family_that_refuses_it_is_refused_not_estimated(spec, cache):
    model = fetch_model(spec, cache)
    settings = TrainingSettings(steps=4, method="textual-inversion")
    with pytest.raises(ConfigError, match="--method textual-inversion cannot train FLUX"):
        estimate_training_memory(model.path, settings, model.family.resolution)
