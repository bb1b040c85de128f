"""SD 2.x single files: OpenCLIP text-encoder keys (with the final layer, text_projection and
logit_scale original checkpoints carry), linear proj_in/proj_out, a diffusers round trip that
gives back every tensor, and the prediction type kept beside the weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel

from dreambooth_core.errors import ModelError
from dreambooth_core.families import ModelFamily, detect_family
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.families.sd_model_spec import model_spec_metadata
from dreambooth_core.families.sd_openclip_layout import EXTRAS_FILE, OPENCLIP_PREFIX, load_extras, neutral_extras
from dreambooth_core.model.safetensors_files import save_single_file
from dreambooth_core.families.sd_single_file import to_single_file_state

P = OPENCLIP_PREFIX


def _fresh(module):
    # Copies out of the file's memory map, so CPU kernels see the same alignment (see test_single_file).
    for tensor in [*module.parameters(), *module.buffers()]:
        tensor.data = tensor.data.clone()
    return module.eval()


def _pipeline(path) -> StableDiffusionPipeline:
    pipeline = StableDiffusionPipeline.from_pretrained(path, local_files_only=True, safety_checker=None)
    for module in (pipeline.unet, pipeline.vae, pipeline.text_encoder):
        _fresh(module)
    return pipeline


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module", params=["tiny-sd2", "tiny-sd2-v"])
def model(request, cache):
    path = fetch_model(request.param, cache).path
    return path, _pipeline(path)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory) -> Path:
    path, pipeline = model
    family = detect_family(path)
    file = tmp_path_factory.mktemp("export") / "model.safetensors"
    state = to_single_file_state(pipeline.unet, pipeline.vae, pipeline.text_encoder)
    save_single_file(state, file, "safetensors", metadata=model_spec_metadata(family, "test"))
    return file


def openclip_text_forward(state: dict, ids: torch.Tensor, layers: int, heads: int) -> torch.Tensor:
    """OpenCLIP's text transformer over original-layout weights, written out: the first `layers`
    residual blocks, then ln_final (as SD 2.x's FrozenOpenCLIPEmbedder does)."""
    x = F.embedding(ids, state[P + "token_embedding.weight"]) + state[P + "positional_embedding"]
    batch, length, width = x.shape
    causal = torch.full((length, length), float("-inf")).triu(1)
    for i in range(layers):
        block = {k.removeprefix(f"{P}transformer.resblocks.{i}."): v for k, v in state.items()
                 if k.startswith(f"{P}transformer.resblocks.{i}.")}
        h = F.layer_norm(x, (width,), block["ln_1.weight"], block["ln_1.bias"])
        q, k, v = (t.view(batch, length, heads, -1).transpose(1, 2)
                   for t in F.linear(h, block["attn.in_proj_weight"], block["attn.in_proj_bias"]).chunk(3, -1))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=causal).transpose(1, 2).reshape(x.shape)
        x = x + F.linear(attended, block["attn.out_proj.weight"], block["attn.out_proj.bias"])
        h = F.layer_norm(x, (width,), block["ln_2.weight"], block["ln_2.bias"])
        x = x + F.linear(F.gelu(F.linear(h, block["mlp.c_fc.weight"], block["mlp.c_fc.bias"])),
                         block["mlp.c_proj.weight"], block["mlp.c_proj.bias"])
    return F.layer_norm(x, (width,), state[P + "ln_final.weight"], state[P + "ln_final.bias"])


def _ids(tokenizer) -> torch.Tensor:
    return tokenizer(["photo of a shrk dog", "a cat"], padding="max_length", max_length=77,
                     return_tensors="pt").input_ids


def test_openclip_keys_and_shapes(model, exported):
    _, pipeline = model
    state = load_file(exported)
    width, layers = 32, pipeline.text_encoder.config.num_hidden_layers
    expected = {
        f"{P}token_embedding.weight": (pipeline.text_encoder.config.vocab_size, width),
        f"{P}positional_embedding": (77, width),
        f"{P}transformer.resblocks.0.attn.in_proj_weight": (3 * width, width),
        f"{P}transformer.resblocks.0.attn.in_proj_bias": (3 * width,),
        f"{P}transformer.resblocks.1.attn.out_proj.weight": (width, width),
        f"{P}transformer.resblocks.1.mlp.c_fc.weight": (64, width),
        f"{P}transformer.resblocks.1.mlp.c_proj.weight": (width, 64),
        f"{P}transformer.resblocks.{layers}.ln_2.weight": (width,),  # the final layer diffusers drops
        f"{P}ln_final.bias": (width,),
        f"{P}text_projection": (width, width),
        f"{P}logit_scale": (),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (32, 32),  # linear, not a 1x1 conv
        "model.diffusion_model.output_blocks.3.1.proj_out.weight": (32, 32),
        "first_stage_model.encoder.mid.attn_1.q.weight": (32, 32, 1, 1),
    }
    assert {key: tuple(state[key].shape) for key in expected if key in state} == expected
    assert not any(key.startswith("cond_stage_model.transformer.") for key in state)
    text = pipeline.text_encoder.state_dict()
    fused = torch.cat([text[f"encoder.layers.1.self_attn.{p}_proj.weight"] for p in "qkv"])
    assert torch.equal(state[f"{P}transformer.resblocks.1.attn.in_proj_weight"], fused)


def test_diffusers_loads_every_tensor_back(model, exported):
    path, pipeline = model
    loaded = StableDiffusionPipeline.from_single_file(str(exported), config=path, local_files_only=True,
                                                      safety_checker=None)
    for name in ("unet", "vae", "text_encoder"):
        original, back = getattr(pipeline, name).state_dict(), getattr(loaded, name).state_dict()
        assert original.keys() == back.keys(), name
        assert [k for k in original if not torch.equal(original[k], back[k])] == [], name
    ids = _ids(pipeline.tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(_fresh(loaded.text_encoder)(ids).last_hidden_state,
                                   pipeline.text_encoder(ids).last_hidden_state, atol=1e-6, rtol=0)
    # The layout does not hold the prediction type: with config=, diffusers takes the folder's scheduler.
    assert loaded.scheduler.config.prediction_type == pipeline.scheduler.config.prediction_type


def test_prediction_type_and_size_travel_in_the_metadata(model, exported):
    path, _ = model
    family = detect_family(path)
    with safe_open(str(exported), "pt") as file:
        metadata = file.metadata()
    v = family.prediction_type == "v_prediction"
    assert metadata["modelspec.prediction_type"] == ("v" if v else "epsilon")
    assert metadata["modelspec.architecture"] == ("stable-diffusion-v2-768-v" if v else "stable-diffusion-v2-512")
    assert metadata["modelspec.resolution"] == f"{family.resolution}x{family.resolution}"


def test_metadata_is_written_in_one_order(model, tmp_path):
    _, pipeline = model
    state = to_single_file_state(pipeline.unet, pipeline.vae, pipeline.text_encoder)
    metadata = model_spec_metadata(ModelFamily(family="sd2", prediction_type="v_prediction", resolution=768), "same")
    files = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for file in files:
        save_single_file(state, file, "safetensors", metadata=metadata)
    assert len({file.read_bytes() for file in files}) == 1
    assert torch.equal(load_file(files[0])[f"{P}text_projection"], torch.eye(32))


def test_written_out_openclip_gives_the_penultimate_conditioning(model, exported):
    _, pipeline = model
    state, ids = load_file(exported), _ids(pipeline.tokenizer)
    layers = pipeline.text_encoder.config.num_hidden_layers
    with torch.no_grad():
        expected = pipeline.text_encoder(ids).last_hidden_state
    penultimate = openclip_text_forward(state, ids, layers, heads=4)
    torch.testing.assert_close(penultimate, expected, atol=1e-5, rtol=0)
    # The neutral final layer is an identity: a loader that reads the last layer gets the same.
    torch.testing.assert_close(openclip_text_forward(state, ids, layers + 1, heads=4), penultimate,
                               atol=1e-6, rtol=0)


def _random_extras(text_encoder) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {key: torch.randn(tensor.shape, generator=generator) for key, tensor in neutral_extras(text_encoder).items()}


@pytest.mark.parametrize("fmt", ["safetensors", "ckpt"])
def test_base_single_file_extras_are_carried_to_the_export(fmt, cache, tmp_path):
    folder = fetch_model("tiny-sd2", cache).path
    pipeline = _pipeline(folder)
    base_extras = _random_extras(pipeline.text_encoder)
    # An "original" SD 2.x file: its own final layer, text_projection and logit_scale.
    base = tmp_path / f"base.{fmt}"
    save_single_file(to_single_file_state(pipeline.unet, pipeline.vae, pipeline.text_encoder, base_extras), base, fmt)
    converted = fetch_model(str(base), tmp_path / "cache", model_config=folder).path
    assert (Path(converted) / EXTRAS_FILE).is_file()
    kept = load_extras(converted)
    assert kept.keys() == base_extras.keys() and all(torch.equal(kept[k], base_extras[k]) for k in kept)

    again = _pipeline(converted)
    state = to_single_file_state(again.unet, again.vae, again.text_encoder, load_extras(converted))
    assert all(torch.equal(state[P + key], tensor) for key, tensor in base_extras.items())
    ids = _ids(again.tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(openclip_text_forward(state, ids, 2, heads=4),
                                   again.text_encoder(ids).last_hidden_state, atol=1e-5, rtol=0)


def test_diffusers_folder_without_extras_gets_neutral_ones(model):
    path, _ = model
    assert load_extras(path) is None


def test_sd1_single_file_keeps_no_extras(cache, tmp_path):
    folder = fetch_model("tiny", cache).path
    pipeline = _pipeline(folder)
    save_single_file(to_single_file_state(pipeline.unet, pipeline.vae, pipeline.text_encoder),
                     tmp_path / "sd1.safetensors", "safetensors")
    converted = fetch_model(str(tmp_path / "sd1.safetensors"), tmp_path / "cache", model_config=folder).path
    assert load_extras(converted) is None


def test_extras_of_another_shape_are_refused(model):
    _, pipeline = model
    extras = {"text_projection": torch.eye(48)}
    with pytest.raises(ModelError, match=r"text_projection unknown or of another shape"):
        to_single_file_state(pipeline.unet, pipeline.vae, pipeline.text_encoder, extras)


def _sd21_on_meta():
    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=96, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
            cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(
            latent_channels=4, layers_per_block=2, sample_size=768, block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
            num_hidden_layers=23, max_position_embeddings=77, projection_dim=512, hidden_act="gelu"))
    return unet, vae, text_encoder


def test_full_sd21_architecture_gets_the_original_layout():
    state = to_single_file_state(*_sd21_on_meta())
    text_keys = [key for key in state if key.startswith(P)]
    # 24 residual blocks of 12 tensors, token and positional embeddings, ln_final, text_projection, logit_scale.
    assert len(text_keys) == 24 * 12 + 2 + 2 + 2
    expected = {
        f"{P}transformer.resblocks.22.attn.in_proj_weight": (3072, 1024),
        f"{P}transformer.resblocks.23.attn.in_proj_weight": (3072, 1024),
        f"{P}transformer.resblocks.23.mlp.c_fc.weight": (4096, 1024),
        f"{P}text_projection": (1024, 1024),
        f"{P}positional_embedding": (77, 1024),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),
        "model.diffusion_model.middle_block.1.proj_out.weight": (1280, 1280),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
    }
    assert {key: tuple(state[key].shape) for key in expected} == expected
    assert state[f"{P}logit_scale"].item() == pytest.approx(math.log(1 / 0.07))


def test_converting_an_export_keeps_what_its_metadata_declares(cache, tmp_path, caplog):
    """A v-prediction export converted with an epsilon 64 px config (a wrong --single-file-config)
    comes back as v-prediction at 96 px: the file's own declaration wins, with a warning."""
    v_folder, eps_folder = fetch_model("tiny-sd2-v", cache).path, fetch_model("tiny-sd2", cache).path
    pipeline = _pipeline(v_folder)
    file = tmp_path / "v.safetensors"
    save_single_file(to_single_file_state(pipeline.unet, pipeline.vae, pipeline.text_encoder), file, "safetensors",
                     metadata=model_spec_metadata(detect_family(v_folder), "v"))
    with caplog.at_level("WARNING", logger="dreambooth"):
        converted = fetch_model(str(file), tmp_path / "cache", model_config=eps_folder).path
    assert detect_family(converted) == detect_family(v_folder)
    assert "declares prediction_type='v_prediction'" in caplog.text and "sample_size=24" in caplog.text


def test_file_without_metadata_keeps_the_borrowed_config(cache, tmp_path):
    v_folder, eps_folder = fetch_model("tiny-sd2-v", cache).path, fetch_model("tiny-sd2", cache).path
    pipeline = _pipeline(v_folder)
    file = tmp_path / "plain.safetensors"
    save_single_file(to_single_file_state(pipeline.unet, pipeline.vae, pipeline.text_encoder), file, "safetensors")
    converted = fetch_model(str(file), tmp_path / "cache", model_config=eps_folder).path
    assert detect_family(converted) == detect_family(eps_folder)


# The published Stability AI configs/stable-diffusion/v2-inference-v.yaml, as data (without the
# parameterization line it is v2-inference.yaml).
PUBLISHED_V2_INFERENCE_V = {"model": {
    "base_learning_rate": 1.0e-4, "target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {
        "parameterization": "v", "linear_start": 0.00085, "linear_end": 0.0120, "num_timesteps_cond": 1,
        "log_every_t": 200, "timesteps": 1000, "first_stage_key": "jpg", "cond_stage_key": "txt",
        "image_size": 64, "channels": 4, "cond_stage_trainable": False, "conditioning_key": "crossattn",
        "monitor": "val/loss_simple_ema", "scale_factor": 0.18215, "use_ema": False,
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": {
            "use_checkpoint": True, "use_fp16": True, "image_size": 32, "in_channels": 4, "out_channels": 4,
            "model_channels": 320, "attention_resolutions": [4, 2, 1], "num_res_blocks": 2,
            "channel_mult": [1, 2, 4, 4], "num_head_channels": 64, "use_spatial_transformer": True,
            "use_linear_in_transformer": True, "transformer_depth": 1, "context_dim": 1024, "legacy": False}},
        "first_stage_config": {"target": "ldm.models.autoencoder.AutoencoderKL", "params": {
            "embed_dim": 4, "monitor": "val/rec_loss", "ddconfig": {
                "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0},
            "lossconfig": {"target": "torch.nn.Identity"}}},
        "cond_stage_config": {"target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
                              "params": {"freeze": True, "layer": "penultimate"}}}}}


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
def test_full_sd21_architecture_gets_the_published_inference_config(prediction):
    from diffusers import DDPMScheduler

    from dreambooth_core.families.sd_exports import inference_config

    unet, vae, _ = _sd21_on_meta()
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              prediction_type=prediction)
    config = inference_config(dict(unet.config), dict(vae.config), dict(scheduler.config))
    expected = json.loads(json.dumps(PUBLISHED_V2_INFERENCE_V))
    if prediction == "epsilon":
        del expected["model"]["params"]["parameterization"]
    assert config == expected


@pytest.mark.parametrize("spec,parameterization", [("tiny-sd2-v", "v"), ("tiny-sd2", None), ("tiny", "no file")])
def test_sd2_export_has_its_inference_yaml_beside_it(spec, parameterization, cache, tmp_path):
    import yaml

    from dreambooth_core.families import load_model_parts

    model = fetch_model(spec, cache)
    parts = load_model_parts(model.path, torch.device("cpu"))
    written = parts.family.write_full_model(model.family, model.path, parts, "shrk", 1, torch.float16, tmp_path)
    if parameterization == "no file":
        assert "shrk.yaml" not in written and not (tmp_path / "shrk.yaml").exists()
        return
    params = yaml.safe_load((tmp_path / "shrk.yaml").read_text())["model"]["params"]
    assert "shrk.yaml" in written and params.get("parameterization") == parameterization
    assert params["unet_config"]["params"]["context_dim"] == 32  # the tiny model's own sizes
