"""SDXL LoRA export: kohya's SDXL names (the UNet under its single-file paths, lora_te1_ /
lora_te2_ for the encoders), and both files load with diffusers' load_lora_weights into a fresh
SDXL pipeline that then computes what the trained peft modules do."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import load_file

from dreambooth_core.families.sd_lora import export_lora
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.families.sd_single_file import to_sdxl_single_file_state
from dreambooth_core.families.stable_diffusion import STABLE_DIFFUSION


def _fresh(path) -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline.from_pretrained(path, local_files_only=True)


def _randomise_lora(model, seed: int) -> None:
    # peft starts lora_B at zero (no effect); give every adapter weight a visible random value.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny SDXL with random adapters on the UNet and both encoders, added as training adds them."""
    path = fetch_model("tiny-sdxl", tmp_path_factory.mktemp("cache")).path
    pipeline = _fresh(path)
    pipeline.unet.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=list(STABLE_DIFFUSION.lora_targets)))
    for seed, encoder in enumerate((pipeline.text_encoder, pipeline.text_encoder_2), start=2):
        inject_adapter_in_model(LoraConfig(r=2, lora_alpha=3, target_modules=list(STABLE_DIFFUSION.text_lora_targets)), encoder)
        _randomise_lora(encoder, seed)
    _randomise_lora(pipeline.unet, 1)
    files = export_lora(pipeline.unet, pipeline.text_encoder, tmp_path_factory.mktemp("lora"), "shrk",
                        text_encoder_2=pipeline.text_encoder_2)
    return path, pipeline, files


def _outputs(pipeline: StableDiffusionXLPipeline) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    unet = pipeline.unet
    size, width = unet.config.sample_size, unet.config.cross_attention_dim
    pooled = pipeline.text_encoder_2.config.projection_dim
    latents = torch.randn(1, 4, size, size, generator=generator)
    context = torch.randn(1, 77, width, generator=generator)
    conditions = {"text_embeds": torch.randn(1, pooled, generator=generator),
                  "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])}
    ids = torch.randint(0, 300, (1, 77), generator=generator)
    with torch.no_grad():
        return [unet(latents, 10, context, added_cond_kwargs=conditions).sample,
                pipeline.text_encoder(ids).last_hidden_state,
                pipeline.text_encoder_2(ids).text_embeds]


@pytest.mark.parametrize("form", ["kohya", "diffusers"])
def test_loaded_sdxl_lora_computes_what_the_peft_modules_compute(form, trained):
    path, pipeline, files = trained
    expected, untouched = _outputs(pipeline.to(torch.float32)), _outputs(_fresh(path))
    loaded = _fresh(path)
    loaded.load_lora_weights(files.kohya_file if form == "kohya" else files.diffusers_folder)
    for got, want, before in zip(_outputs(loaded), expected, untouched):
        assert not torch.allclose(before, want, atol=1e-3)  # the adapters do change every output
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_kohya_sdxl_names_are_the_single_file_paths(trained):
    """AUTOMATIC1111 and ComfyUI find a kohya SDXL LoRA's layers by replacing lora_unet_ with the
    single file's diffusion_model path (dots as underscores), and lora_te1_ with the first
    embedder's transformer path; lora_te2_ keeps transformers' names, as kohya writes them."""
    path, _, files = trained
    state = load_file(files.kohya_file)
    modules = {key.split(".")[0] for key in state}
    base = _fresh(path)
    single_file = {key.removesuffix(".weight").replace(".", "_") for key in to_sdxl_single_file_state(
        base.unet, base.vae, base.text_encoder, base.text_encoder_2)}
    unet = {m for m in modules if m.startswith("lora_unet_")}
    assert unet and {m.replace("lora_unet_", "model_diffusion_model_") for m in unet} <= single_file
    assert "lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_out_0" in unet
    assert "lora_unet_output_blocks_0_1_transformer_blocks_0_attn1_to_q" in unet
    first = {m for m in modules if m.startswith("lora_te1_")}
    assert first and {m.replace("lora_te1_", "conditioner_embedders_0_transformer_") for m in first} <= single_file
    second = {m for m in modules if m.startswith("lora_te2_")}
    assert "lora_te2_text_model_encoder_layers_1_self_attn_out_proj" in second
    # 4 projections x (self + cross) x 8 transformer blocks (2 down, 2 mid, 2 x 2 up); 4 x 2 per encoder.
    assert (len(unet), len(first), len(second)) == (64, 8, 8)
    assert state["lora_te2_text_model_encoder_layers_0_self_attn_q_proj.alpha"].item() == 3
    assert modules == unet | first | second
    # AUTOMATIC1111 applies a second-encoder adapter to an attention layer only when q, k, v and out
    # are all there (it fuses them into OpenCLIP's in_proj); a layer with fewer loses them silently.
    layers = {m.rsplit("_", 2)[0] for m in second}
    assert {f"{layer}_{p}_proj" for layer in layers for p in ("q", "k", "v", "out")} == second
