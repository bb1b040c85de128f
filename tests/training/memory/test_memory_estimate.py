"""The memory estimate: a real training step on fake tensors allocates what it allocates on real ones."""

import os
from pathlib import Path

import pytest

from dreambooth_core.config import RuntimeSettings, TrainingSettings
from dreambooth_core.errors import ConfigError
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.training.memory.estimate import estimate_training_memory

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
    # Every part the Trainer holds stays alive between steps, but the text encoders once their
    # embeddings are cached (the encoders' phase ran first: the denoiser's is the last measured)
    assert fake.between_steps + fake.encoder_bytes >= fake.model_bytes


@pytest.mark.slow  # builds two tiny models (seconds)
@pytest.mark.parametrize("spec", ["tiny-flux", "tiny-klein"])
def test_textual_inversion_of_a_family_that_refuses_it_is_refused_not_estimated(spec, cache):
    model = fetch_model(spec, cache)
    settings = TrainingSettings(steps=4, method="textual-inversion")
    with pytest.raises(ConfigError, match="--method textual-inversion cannot train FLUX"):
        estimate_training_memory(model.path, settings, model.family.resolution)


# [lowvram]: a quantised base, the text encoders off the GPU, and --offload, in the estimate.

def estimate(spec: str, cache: Path, runtime: RuntimeSettings = RuntimeSettings(), fake: bool = True, **training):
    model = fetch_model(spec, cache)
    settings = TrainingSettings(steps=4, **training)
    return estimate_training_memory(model.path, settings, 64, runtime, prior=True, fake=fake)


@pytest.mark.slow  # three estimates of tiny-flux (seconds each)
def test_a_quantised_base_is_counted_at_its_quantised_bytes_and_never_whole_on_the_host(cache):
    auto, int8, nf4 = (estimate("tiny-flux", cache, method="lora", base_precision=base)
                       for base in ("auto", "int8", "nf4"))
    assert auto.peak_bytes > int8.peak_bytes > nf4.peak_bytes
    assert auto.between_steps > int8.between_steps > nf4.between_steps
    assert int8.quantised_bytes > nf4.quantised_bytes > 0 == auto.quantised_bytes
    # the quantised layers are loaded onto the GPU shard by shard: the host holds the rest
    assert int8.model_bytes == nf4.model_bytes < auto.model_bytes / 2
    assert 0 < nf4.largest_layer_bytes < auto.model_bytes - nf4.model_bytes


@pytest.mark.slow  # two estimates of the tiny SD model, one on real tensors (seconds each)
def test_the_text_encoders_leave_the_gpu_once_their_embeddings_are_cached(cache):
    cached = estimate("tiny", cache, method="lora")
    encoded = estimate("tiny", cache, RuntimeSettings(cache_text_embeddings=False), method="lora")
    assert cached.encoder_bytes == encoded.encoder_bytes > 0 and cached.embedding_bytes > 0
    assert set(cached.phase_peaks) == {"encoding", "denoiser"} and set(encoded.phase_peaks) == {"denoiser"}
    # between steps the cached embeddings stand in for the encoders
    assert cached.between_steps == encoded.between_steps - cached.encoder_bytes + cached.embedding_bytes
    assert cached.phase_peaks["denoiser"] < encoded.phase_peaks["denoiser"]
    # while the text side trains they are there: textual inversion, and DreamBooth's text encoder phase
    inversion = estimate("tiny", cache, method="textual-inversion")
    assert set(inversion.phase_peaks) == {"denoiser"} and inversion.embedding_bytes == 0
    phases = estimate("tiny", cache, method="dreambooth", text_encoder_steps=1).phase_peaks
    assert list(phases) == ["text encoder", "encoding", "denoiser"]
    assert estimate("tiny", cache, fake=False, method="lora").peak_bytes == cached.peak_bytes


@pytest.mark.slow  # three estimates of tiny-flux, one on real tensors (seconds each)
def test_offload_keeps_the_blocks_weights_gradients_and_adamw_moments_on_the_host(cache):
    import torch

    from dreambooth_core.families import load_model_parts
    from dreambooth_core.training.memory.estimate import IN_FLIGHT, swapped_blocks

    full = {"method": "dreambooth", "text_encoder_steps": 0}
    checkpointing = RuntimeSettings(gradient_checkpointing=True)
    full |= {"step_in_backward": True}  # what --offload needs (config.offload_needs)
    kept = estimate("tiny-flux", cache, checkpointing, **full)
    offload = estimate("tiny-flux", cache, checkpointing.model_copy(update={"offload": True}), **full)
    parts = load_model_parts(fetch_model("tiny-flux", cache).path, torch.device("cpu"), weights=False)
    blocks = [sum(p.numel() * 4 for p in b.parameters()) for b in swapped_blocks(parts.denoiser)]
    denoiser = parts.denoiser  # FLUX's blocks: its double-stream and single-stream ones
    assert len(blocks) == len(denoiser.transformer_blocks) + len(denoiser.single_transformer_blocks) > 2
    # fp32 weights and AdamW's two moments (and a step counter per weight); the step in backward
    # that offload needs keeps no gradients between steps
    assert 3 * sum(blocks) <= offload.offloaded_bytes <= 3 * sum(blocks) + 4 * 1000
    in_flight = 4 * sum(sorted(blocks)[-IN_FLIGHT:])  # a block in flight has its gradient for a moment
    assert offload.between_steps == pytest.approx(kept.between_steps - 3 * sum(blocks) + in_flight, abs=4000)
    assert offload.checkpoint_bytes == kept.checkpoint_bytes  # the checkpoint holds the same state
    real = estimate("tiny-flux", cache, checkpointing.model_copy(update={"offload": True}), fake=False, **full)
    assert real.peak_bytes == offload.peak_bytes
