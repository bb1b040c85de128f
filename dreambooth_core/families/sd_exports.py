"""The files a Stable Diffusion 1.x, 2.x or SDXL session exports, and reading snapshots back.

- full model: `<name>.safetensors` and `.ckpt` in the original single-file layout (with
  `<name>.yaml` for SD 2.x, which AUTOMATIC1111 reads to build the model and choose
  v-prediction), and `diffusers/` in the hub's layout;
- LoRA: the kohya-layout `<name>.safetensors` and a diffusers folder (sd_lora.py);
- textual inversion: one embedding per token (sd_embedding.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dreambooth_core.families.family import ModelFamily, ModelParts
from dreambooth_core.families.sd_embedding import export_embeddings
from dreambooth_core.families.sd_lora import export_lora
from dreambooth_core.families.sd_model_spec import model_spec_metadata
from dreambooth_core.families.sd_openclip_layout import load_extras
from dreambooth_core.families.sd_single_file import to_sdxl_single_file_state, to_single_file_state
from dreambooth_core.model.hub_layout import save_pipeline
from dreambooth_core.model.safetensors_files import save_single_file
from dreambooth_core.session.paths import DIFFUSERS


def original_layout(facts: ModelFamily, model_path: str, unet, vae, text_encoders: list,
                    name: str) -> tuple[dict, dict]:
    """(state dict in the original single-file layout, its model-spec metadata)."""
    if len(text_encoders) == 2:
        state = to_sdxl_single_file_state(unet, vae, *text_encoders)
    else:  # SD 2.x: the base single file's final text-encoder layer etc. when it was one (else neutral)
        state = to_single_file_state(unet, vae, text_encoders[0], load_extras(model_path))
    return state, model_spec_metadata(facts, name)


def full_model_files(facts: ModelFamily, model_path: str, parts: ModelParts, name: str, step: int,
                     dtype: torch.dtype, out: Path) -> list[str]:
    pipeline = _pipeline_with(model_path, parts).to(dtype=dtype)
    save_pipeline(pipeline, out / DIFFUSERS)
    encoders = [e for e in (pipeline.text_encoder, getattr(pipeline, "text_encoder_2", None))
                if e is not None]
    state, metadata = original_layout(facts, model_path, pipeline.unet, pipeline.vae, encoders, name)
    for fmt in ("safetensors", "ckpt"):
        save_single_file(state, out / f"{name}.{fmt}", fmt, step, metadata)
    if facts.family != "sd2":
        return [DIFFUSERS, f"{name}.safetensors", f"{name}.ckpt"]
    write_inference_yaml(out / f"{name}.yaml", dict(pipeline.unet.config), dict(pipeline.vae.config),
                         dict(pipeline.scheduler.config))
    return [DIFFUSERS, f"{name}.safetensors", f"{name}.ckpt", f"{name}.yaml"]


def _pipeline_with(model_path: str, parts: ModelParts):
    if parts.text_encoder_2 is not None:
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline.from_pretrained(model_path, unet=parts.denoiser,
                                                         text_encoder=parts.text_encoder,
                                                         text_encoder_2=parts.text_encoder_2)
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(model_path, unet=parts.denoiser,
                                                   text_encoder=parts.text_encoder,
                                                   safety_checker=None, requires_safety_checker=False)


def snapshot_single_file(facts: ModelFamily, model_path: str, parts: ModelParts, name: str,
                         step: int, path: Path) -> None:
    """The full model as one fp16 original-layout file (the training modules stay fp32: each tensor
    is converted as a copy)."""
    state, metadata = original_layout(facts, model_path, parts.denoiser, parts.vae, parts.text_encoders, name)
    state = {k: v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.cpu()
             for k, v in state.items()}
    save_single_file(state, path, "safetensors", step, metadata)


def read_single_file(parts: ModelParts, weights: Path, model_path: str) -> None:
    """The UNet and text encoder(s) of an original-layout single file, read with diffusers' own
    single-file loading against the base model's configs, in place of the parts' own (fp32)."""
    if parts.text_encoder_2 is not None:
        from diffusers import StableDiffusionXLPipeline

        pipeline = StableDiffusionXLPipeline.from_single_file(str(weights), config=model_path,
                                                              local_files_only=True)
        parts.text_encoder_2 = pipeline.text_encoder_2.to(torch.float32)
    else:
        from diffusers import StableDiffusionPipeline

        pipeline = StableDiffusionPipeline.from_single_file(
            str(weights), config=model_path, local_files_only=True, safety_checker=None,
            requires_safety_checker=False)
    parts.denoiser = pipeline.unet.to(torch.float32)
    parts.text_encoder = pipeline.text_encoder.to(torch.float32)


def lora_files(denoiser, encoders: list, name: str, dtype: torch.dtype, out: Path) -> list[str]:
    export_lora(denoiser, encoders[0], out, name, dtype=dtype, text_encoder_2=(encoders + [None])[1])
    return [f"{name}.safetensors", f"{name}-diffusers"]


def embedding_files(vectors: list[dict[str, torch.Tensor]], step: int, out: Path,
                    full: bool = True) -> list[str]:
    """`vectors`: each text encoder's vectors by token. Without `full`, only what a snapshot keeps."""
    export_embeddings(vectors[0], out, step, write_pt=full, second=(vectors + [None])[1])
    return sorted(p.name for p in out.iterdir())


# The original (LDM) inference config of an SD 2.x single file, written beside it as `<name>.yaml`.
#
# AUTOMATIC1111 reads a `.yaml` of the checkpoint's name to build the model and to
# choose v-prediction (`parameterization: "v"`); without one it guesses. The values
# are those of Stability AI's published `v2-inference.yaml` / `v2-inference-v.yaml`;
# the architecture's sizes come from the model itself, so the full-size SD 2.x
# model gets exactly the published file.
def inference_config(unet: dict, vae: dict, scheduler: dict) -> dict:
    """The config for a diffusers UNet, VAE and scheduler (their config dicts)."""
    params = {
        "linear_start": scheduler["beta_start"], "linear_end": scheduler["beta_end"],
        "num_timesteps_cond": 1, "log_every_t": 200, "timesteps": scheduler["num_train_timesteps"],
        "first_stage_key": "jpg", "cond_stage_key": "txt", "image_size": 64, "channels": unet["in_channels"],
        "cond_stage_trainable": False, "conditioning_key": "crossattn", "monitor": "val/loss_simple_ema",
        "scale_factor": vae.get("scaling_factor", 0.18215), "use_ema": False,
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                        "params": _unet(unet)},
        "first_stage_config": {"target": "ldm.models.autoencoder.AutoencoderKL", "params": _vae(vae)},
        "cond_stage_config": {"target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
                              "params": {"freeze": True, "layer": "penultimate"}},
    }
    if scheduler.get("prediction_type") == "v_prediction":
        params = {"parameterization": "v", **params}
    return {"model": {"base_learning_rate": 1.0e-4, "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
                      "params": params}}


def _unet(unet: dict) -> dict:
    channels = list(unet["block_out_channels"])
    heads = unet["attention_head_dim"]
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * len(channels)
    with_attention = [2 ** i for i, kind in enumerate(unet["down_block_types"]) if "CrossAttn" in kind]
    return {"use_checkpoint": True, "use_fp16": True, "image_size": 32, "in_channels": unet["in_channels"],
            "out_channels": unet["out_channels"], "model_channels": channels[0],
            "attention_resolutions": sorted(with_attention, reverse=True),
            "num_res_blocks": unet["layers_per_block"],
            "channel_mult": [c // channels[0] for c in channels],
            "num_head_channels": channels[0] // heads[0],
            "use_spatial_transformer": True,
            "use_linear_in_transformer": bool(unet.get("use_linear_projection")),
            "transformer_depth": 1, "context_dim": unet["cross_attention_dim"], "legacy": False}


def _vae(vae: dict) -> dict:
    channels = list(vae["block_out_channels"])
    return {"embed_dim": vae["latent_channels"], "monitor": "val/rec_loss",
            "ddconfig": {"double_z": True, "z_channels": vae["latent_channels"], "resolution": 256,
                         "in_channels": vae["in_channels"], "out_ch": vae["out_channels"], "ch": channels[0],
                         "ch_mult": [c // channels[0] for c in channels],
                         "num_res_blocks": vae["layers_per_block"],
                         "attn_resolutions": [], "dropout": 0.0},
            "lossconfig": {"target": "torch.nn.Identity"}}


def write_inference_yaml(path: Path, unet: dict, vae: dict, scheduler: dict) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(inference_config(unet, vae, scheduler), sort_keys=False))
