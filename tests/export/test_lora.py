"""LoRA export: the kohya-layout file and the diffusers folder each load with diffusers'
load_lora_weights into a fresh pipeline that then computes what the trained peft model does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from dreambooth_core.errors import ModelError
from dreambooth_core.families.sd_lora import DIFFUSERS_FILE, export_lora, kohya_lora_state
from dreambooth_core.families.base_model import fetch_model

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def _fresh(path) -> StableDiffusionPipeline:
    return StableDiffusionPipeline.from_pretrained(path, local_files_only=True, safety_checker=None)


def _randomise_lora(model, seed: int) -> None:
    # peft starts lora_B at zero (no effect); give every adapter weight a visible random value.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


@pytest.fixture(scope="module", params=["tiny", "tiny-sd2"])
def trained(request, tmp_path_factory):
    """A pipeline with random LoRA adapters: the UNet's through diffusers' add_adapter, the text
    encoder's through peft's get_peft_model (a PeftModel wrapper), alpha different from rank."""
    path = fetch_model(request.param, tmp_path_factory.mktemp("cache")).path
    pipeline = _fresh(path)
    pipeline.unet.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=UNET_TARGETS))
    text_encoder = get_peft_model(pipeline.text_encoder, LoraConfig(r=2, lora_alpha=3, target_modules=TEXT_TARGETS))
    _randomise_lora(pipeline.unet, 1)
    _randomise_lora(text_encoder, 2)
    out = tmp_path_factory.mktemp("lora")
    files = export_lora(pipeline.unet, text_encoder, out, "shrk")
    return path, pipeline.unet.eval(), text_encoder.eval(), files


def _inputs(pipeline_path):
    generator = torch.Generator().manual_seed(0)
    size = _fresh(pipeline_path).unet.config.sample_size
    return (torch.randn(1, 4, size, size, generator=generator), torch.randn(1, 77, 32, generator=generator),
            torch.randint(0, 500, (1, 77), generator=generator))


def _outputs(unet, text_encoder, inputs):
    latents, context, ids = inputs
    with torch.no_grad():
        return unet(latents, 10, context).sample, text_encoder(ids).last_hidden_state


@pytest.mark.parametrize("form", ["kohya", "diffusers"])
def test_loaded_lora_computes_what_the_peft_model_computes(form, trained):
    path, unet, text_encoder, files = trained
    inputs = _inputs(path)
    expected = _outputs(unet, text_encoder, inputs)
    base = _fresh(path)
    untouched = _outputs(base.unet, base.text_encoder, inputs)
    loaded = _fresh(path)
    loaded.load_lora_weights(files.kohya_file if form == "kohya" else files.diffusers_folder)
    actual = _outputs(loaded.unet, loaded.text_encoder, inputs)
    for got, want, before in zip(actual, expected, untouched):
        assert not torch.allclose(before, want, atol=1e-3)  # the adapters do change the outputs
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_kohya_names_shapes_and_alphas(trained):
    _, _, _, files = trained
    state = load_file(files.kohya_file)
    unet_key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    out_key = "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0"
    text_key = "lora_te_text_model_encoder_layers_1_self_attn_out_proj"
    assert tuple(state[f"{unet_key}.lora_down.weight"].shape) == (4, 32)
    assert tuple(state[f"{unet_key}.lora_up.weight"].shape) == (32, 4)
    assert tuple(state[f"{out_key}.lora_up.weight"].shape) == (32, 4)
    assert tuple(state[f"{text_key}.lora_down.weight"].shape) == (2, 32)
    assert state[f"{unet_key}.alpha"].item() == 8 and state[f"{text_key}.alpha"].item() == 3
    # 4 attention projections x (self + cross) x 4 transformers in the tiny UNet; 4 x 2 text layers.
    modules = {key.split(".")[0] for key in state}  # kohya module names hold no dots
    assert len([m for m in modules if m.startswith("lora_unet_")]) == 32
    assert len([m for m in modules if m.startswith("lora_te_")]) == 8
    assert len(state) == 3 * 40


def test_files_are_small_and_sizes_are_reported(trained):
    path, _, _, files = trained
    kohya, diffusers = Path(files.kohya_file), Path(files.diffusers_folder) / DIFFUSERS_FILE
    assert files.sizes == {str(kohya): kohya.stat().st_size, str(diffusers): diffusers.stat().st_size}
    unet_weights = next((Path(path) / "unet").glob("*.safetensors")).stat().st_size
    assert kohya.stat().st_size < unet_weights / 4


def test_half_precision_export(trained):
    _, unet, text_encoder, _ = trained
    state = kohya_lora_state(unet, text_encoder, dtype=torch.float16)
    assert {t.dtype for t in state.values()} == {torch.float16}


def test_model_without_adapters_is_refused(trained, tmp_path):
    path, _, _, _ = trained
    with pytest.raises(ModelError, match="has no LoRA adapter named 'default'"):
        export_lora(_fresh(path).unet, None, tmp_path, "none")


def test_dora_is_refused(trained, tmp_path):
    path, _, _, _ = trained
    unet = _fresh(path).unet
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q"], use_dora=True))
    with pytest.raises(ModelError, match="uses DoRA"):
        export_lora(unet, None, tmp_path, "dora")
