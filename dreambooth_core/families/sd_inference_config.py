"""The original (LDM) inference config of an SD 2.x single file, written beside it as `<name>.yaml`.

AUTOMATIC1111 reads a `.yaml` of the checkpoint's name to build the model and to
choose v-prediction (`parameterization: "v"`); without one it guesses. The values
are those of Stability AI's published `v2-inference.yaml` / `v2-inference-v.yaml`;
the architecture's sizes come from the model itself, so the full-size SD 2.x
model gets exactly the published file.
"""

from __future__ import annotations

from pathlib import Path


def inference_config(unet: dict, vae: dict, scheduler: dict) -> dict:
    """The config for a diffusers UNet, VAE and scheduler (their config dicts)."""
    params = {
        "linear_start": scheduler["beta_start"], "linear_end": scheduler["beta_end"],
        "num_timesteps_cond": 1, "log_every_t": 200, "timesteps": scheduler["num_train_timesteps"],
        "first_stage_key": "jpg", "cond_stage_key": "txt", "image_size": 64, "channels": unet["in_channels"],
        "cond_stage_trainable": False, "conditioning_key": "crossattn", "monitor": "val/loss_simple_ema",
        "scale_factor": vae.get("scaling_factor", 0.18215), "use_ema": False,
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": _unet(unet)},
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
            "attention_resolutions": sorted(with_attention, reverse=True), "num_res_blocks": unet["layers_per_block"],
            "channel_mult": [c // channels[0] for c in channels], "num_head_channels": channels[0] // heads[0],
            "use_spatial_transformer": True, "use_linear_in_transformer": bool(unet.get("use_linear_projection")),
            "transformer_depth": 1, "context_dim": unet["cross_attention_dim"], "legacy": False}


def _vae(vae: dict) -> dict:
    channels = list(vae["block_out_channels"])
    return {"embed_dim": vae["latent_channels"], "monitor": "val/rec_loss",
            "ddconfig": {"double_z": True, "z_channels": vae["latent_channels"], "resolution": 256,
                         "in_channels": vae["in_channels"], "out_ch": vae["out_channels"], "ch": channels[0],
                         "ch_mult": [c // channels[0] for c in channels], "num_res_blocks": vae["layers_per_block"],
                         "attn_resolutions": [], "dropout": 0.0},
            "lossconfig": {"target": "torch.nn.Identity"}}


def write_inference_yaml(path: Path, unet: dict, vae: dict, scheduler: dict) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(inference_config(unet, vae, scheduler), sort_keys=False))
