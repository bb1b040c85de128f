"""The single-file export holds every weight under its original name and loads back unchanged."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from dreambooth_core.errors import ConfigError, ModelError
from dreambooth_core.families.sd_single_file import (
    TEXT_ENCODER_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    to_single_file_state,
)
from dreambooth_core.model.safetensors_files import save_single_file
from dreambooth_core.families.sd_tiny import build_tiny_model
from dreambooth_core.model.tiny import tiny_merges

# 256 byte characters, the same 256 ending a word, the merged pieces, 2 special tokens.
TINY_VOCABULARY = 2 * 256 + len(tiny_merges()) + 2


def _load_tiny(folder, dtype=torch.float32):
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype, local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype, local_files_only=True)
    return unet.eval(), vae.eval(), text_encoder.eval()


def _in_fresh_memory(module):
    # Weights loaded from a file are views into its memory map at arbitrary alignment, and CPU kernels
    # round differently (~1e-6) for differently aligned weights. Fresh copies make outputs comparable.
    for tensor in [*module.parameters(), *module.buffers()]:
        tensor.data = tensor.data.clone()
    return module.eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def models(folder):
    return tuple(_in_fresh_memory(module) for module in _load_tiny(folder))


@pytest.fixture(scope="module")
def state(models):
    return to_single_file_state(*models)


@pytest.fixture(scope="module")
def exported(state, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    save_single_file(state, out / "model.safetensors", "safetensors", global_step=500)
    save_single_file(state, out / "model.ckpt", "ckpt", global_step=500)
    return out


def _fingerprints(tensors):
    # Many weights share values (norms start at 1/0), so compare multisets of (shape-free) contents.
    return Counter(hashlib.sha1(t.detach().reshape(-1).numpy().tobytes()).hexdigest() for t in tensors)


def test_every_weight_appears_exactly_once_under_its_component_prefix(models, state):
    unet, vae, text_encoder = models
    total = 0
    for module, prefix in [(unet, UNET_PREFIX), (vae, VAE_PREFIX), (text_encoder, TEXT_ENCODER_PREFIX)]:
        source = module.state_dict()
        mapped = {k: v for k, v in state.items() if k.startswith(prefix)}
        assert len(mapped) == len(source)
        assert _fingerprints(mapped.values()) == _fingerprints(source.values())
        total += len(source)
    assert len(state) == total


def test_original_key_names_and_shapes(state):
    expected = {
        "model.diffusion_model.input_blocks.0.0.weight": (32, 4, 3, 3),
        "model.diffusion_model.time_embed.0.weight": (128, 32),
        "model.diffusion_model.time_embed.2.weight": (128, 128),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (32, 32, 1, 1),
        "model.diffusion_model.input_blocks.2.0.op.weight": (32, 32, 3, 3),
        "model.diffusion_model.input_blocks.3.0.skip_connection.weight": (64, 32, 1, 1),
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight": (64, 32),
        "model.diffusion_model.middle_block.2.emb_layers.1.weight": (64, 128),
        "model.diffusion_model.output_blocks.1.1.conv.weight": (64, 64, 3, 3),
        "model.diffusion_model.output_blocks.3.1.proj_out.weight": (32, 32, 1, 1),
        "model.diffusion_model.out.0.weight": (32,),
        "model.diffusion_model.out.2.weight": (4, 32, 3, 3),
        "first_stage_model.encoder.mid.attn_1.q.weight": (32, 32, 1, 1),
        "first_stage_model.decoder.mid.attn_1.proj_out.weight": (32, 32, 1, 1),
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (32, 16, 1, 1),
        "first_stage_model.encoder.down.0.downsample.conv.weight": (16, 16, 3, 3),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (16, 32, 1, 1),
        "first_stage_model.decoder.up.2.upsample.conv.weight": (32, 32, 3, 3),
        "first_stage_model.encoder.norm_out.weight": (32,),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
        "first_stage_model.post_quant_conv.weight": (4, 4, 1, 1),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (TINY_VOCABULARY, 32),
        "cond_stage_model.transformer.text_model.encoder.layers.1.self_attn.q_proj.weight": (32, 32),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": (32,),
    }
    assert {key: tuple(state[key].shape) for key in expected if key in state} == expected
    assert all(t.is_contiguous() and not t.requires_grad for t in state.values())


def test_keeps_the_dtype_it_is_given(folder):
    state = to_single_file_state(*_load_tiny(folder, torch.float16))
    assert {t.dtype for t in state.values()} == {torch.float16}


def _assert_same_outputs(unet, vae, text_encoder, original):
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 16, 16, generator=generator)
    image = torch.randn(1, 3, 64, 64, generator=generator)
    context = torch.randn(1, 77, 32, generator=generator)
    ids = torch.randint(0, 512, (1, 77), generator=generator)
    unet, vae, text_encoder = (_in_fresh_memory(module) for module in (unet, vae, text_encoder))
    ref_unet, ref_vae, ref_text = original
    with torch.no_grad():
        pairs = [
            (unet(latents, 10, context).sample, ref_unet(latents, 10, context).sample),
            (vae.encode(image).latent_dist.mean, ref_vae.encode(image).latent_dist.mean),
            (vae.decode(latents).sample, ref_vae.decode(latents).sample),
            (text_encoder(ids).last_hidden_state, ref_text(ids).last_hidden_state),
        ]
    for loaded, reference in pairs:
        torch.testing.assert_close(loaded, reference, atol=1e-6, rtol=0)


def test_diffusers_loads_the_safetensors_back_to_the_same_model(folder, models, exported):
    path = str(exported / "model.safetensors")
    unet = UNet2DConditionModel.from_single_file(path, config=str(folder), subfolder="unet", local_files_only=True)
    vae = AutoencoderKL.from_single_file(path, config=str(folder), subfolder="vae", local_files_only=True)
    pipeline = StableDiffusionPipeline.from_single_file(
        path, config=str(folder), local_files_only=True, safety_checker=None)
    _assert_same_outputs(unet, vae, pipeline.text_encoder, models)
    _assert_same_outputs(pipeline.unet, pipeline.vae, pipeline.text_encoder, models)


def test_ckpt_loads_weights_only_and_matches_the_safetensors(exported):
    checkpoint = torch.load(exported / "model.ckpt", weights_only=True)
    safetensors = load_file(exported / "model.safetensors")
    assert checkpoint["global_step"] == 500
    assert checkpoint["state_dict"].keys() == safetensors.keys()
    for key, tensor in safetensors.items():
        assert torch.equal(checkpoint["state_dict"][key], tensor), key


def test_ckpt_without_step_has_only_the_state_dict(state, tmp_path):
    save_single_file(state, tmp_path / "m.ckpt", "ckpt", global_step=None)
    assert list(torch.load(tmp_path / "m.ckpt", weights_only=True)) == ["state_dict"]


def test_unknown_format_is_refused(state, tmp_path):
    with pytest.raises(ConfigError, match="'bin'.*safetensors.*ckpt"):
        save_single_file(state, tmp_path / "m.bin", "bin", global_step=None)


def _sd15_on_meta():
    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
            num_hidden_layers=12, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu"))
    return unet, vae, text_encoder


def test_full_sd15_architecture_gets_the_familiar_layout():
    state = to_single_file_state(*_sd15_on_meta())
    counts = Counter(key.split(".")[0] for key in state)
    assert counts == {"model": 686, "first_stage_model": 248, "cond_stage_model": 196}
    expected = {
        "model.diffusion_model.input_blocks.11.0.in_layers.0.weight": (1280,),
        "model.diffusion_model.input_blocks.9.0.op.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.0.attn2.to_k.weight": (1280, 768),
        "model.diffusion_model.middle_block.1.proj_in.weight": (1280, 1280, 1, 1),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.11.1.proj_out.weight": (320, 320, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.up.0.block.2.conv2.weight": (128, 128, 3, 3),
        "first_stage_model.encoder.down.3.block.1.conv2.weight": (512, 512, 3, 3),
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
    }
    assert {key: tuple(state[key].shape) for key in expected if key in state} == expected
    assert not any(key.startswith("model.diffusion_model.output_blocks.12") for key in state)


def test_text_encoder_that_is_not_clip_is_refused(models):
    unet, vae, _ = models
    config = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=1)
    with pytest.raises(ModelError, match="CLIPTextModelWithProjection.*CLIPTextModel"):
        to_single_file_state(unet, vae, CLIPTextModelWithProjection(config))


def test_text_encoder_of_neither_family_is_refused(models):
    unet, vae, _ = models
    config = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=1,
                            hidden_act="relu")
    with pytest.raises(ModelError, match="'relu': neither SD 1.x's OpenAI CLIP .* nor SD 2.x's OpenCLIP"):
        to_single_file_state(unet, vae, CLIPTextModel(config))


def test_a_weight_the_mapping_does_not_know_is_named_not_dropped(folder):
    unet, vae, text_encoder = _load_tiny(folder)
    unet.conv_in.register_parameter("lora_scale", torch.nn.Parameter(torch.ones(1)))
    with pytest.raises(ModelError, match=r"UNet has 1 weight.*conv_in\.lora_scale"):
        to_single_file_state(unet, vae, text_encoder)


def test_text_encoder_keys_from_transformers_4_get_the_same_names(folder, state):
    unet, vae, text_encoder = _load_tiny(folder)
    bare = text_encoder.state_dict()
    # transformers 4.x nests CLIPTextModel's weights under "text_model."; 5.x does not.
    text_encoder.state_dict = lambda: {f"text_model.{key}": tensor for key, tensor in bare.items()}
    assert to_single_file_state(unet, vae, text_encoder).keys() == state.keys()
