"""Which Stable Diffusion a diffusers folder holds, read from its own config files.

Training and export need three facts about a base model: its family (SD 1.x or
SD 2.x: the text encoder and the single-file layout differ), what its UNet
predicts (noise, "epsilon", or velocity, "v_prediction": the training target
differs), and the image size it was trained at. Each is read from the folder's
JSON configs, never guessed from the model's name:

- family: the text encoder's activation. SD 1.x uses OpenAI CLIP ("quick_gelu");
  SD 2.x uses OpenCLIP converted to a CLIPTextModel ("gelu"). SDXL is told by its pipeline
  (StableDiffusionXLPipeline: two text encoders, the second an OpenCLIP with a projection)
  and its UNet's micro-conditioning (addition_embed_type "text_time").
- prediction type: the scheduler config's `prediction_type` (absent means epsilon).
- resolution: UNet sample size x VAE downscale factor.

Architectures this tool cannot train (the SDXL refiner, inpainting UNets, other pipelines)
are refused with a ModelError that names the file and field that gave them away.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dreambooth_core.errors import ModelError

# The smallest native resolution of the supported models (SD 1.x, SD 2.x 512 px): what
# photos are judged against before a downloaded model's own is known.
SMALLEST_SD_RESOLUTION = 512
_FAMILY_BY_ACTIVATION = {"quick_gelu": "sd1", "gelu": "sd2"}
_SDXL_PIPELINE = "StableDiffusionXLPipeline"
_SDXL_TEXT_ENCODERS = {"text_encoder": ("CLIPTextModel", "quick_gelu"),
                       "text_encoder_2": ("CLIPTextModelWithProjection", "gelu")}
_PREDICTION_TYPES = ("epsilon", "v_prediction")
_SUPPORTED = "Stable Diffusion 1.x and 2.x (512 px epsilon, 768 px v-prediction) and SDXL base"


class ModelFamily(BaseModel):
    """What training and export need to know about a base model's architecture."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: Literal["sd1", "sd2", "sdxl"] = Field(description="SD 1.x (OpenAI CLIP), SD 2.x (OpenCLIP) or "
                                                  "SDXL (both, and micro-conditioning).")
    prediction_type: Literal["epsilon", "v_prediction"] = Field(description="What the UNet predicts.")
    resolution: int = Field(description="Image size the model was trained at, in pixels.")


def detect_family(model_path: str | Path) -> ModelFamily:
    """The family, prediction type and native resolution of the diffusers folder `model_path`."""
    folder = Path(model_path)
    sdxl = _is_sdxl(folder)
    unet = _read_config(folder, "unet/config.json")
    _check_unet(folder, unet, sdxl)
    return ModelFamily(family=_sdxl_family(folder) if sdxl else _family(folder),
                       prediction_type=_prediction_type(folder),
                       resolution=resolution_of(unet, _read_config(folder, "vae/config.json")))


def has_second_text_encoder(model_path: str | Path) -> bool:
    """Whether a diffusers folder (detected as SDXL, or a config-only copy of one) holds SDXL's
    second text encoder: what the loaders check to build SDXL's parts and pipeline."""
    return (Path(model_path) / "text_encoder_2").is_dir()


def resolution_of(unet_config: dict, vae_config: dict) -> int:
    """The image size a model was trained at: UNet sample size x VAE downscale factor."""
    return int(unet_config["sample_size"]) * vae_scale(vae_config)


def vae_scale(vae_config: dict) -> int:
    """Image pixels per latent pixel."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def _read_config(folder: Path, relative: str) -> dict:
    path = folder / relative
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"The model folder {folder} has no {relative}, so its architecture cannot be told. "
            "Point --model at a complete diffusers Stable Diffusion folder (model_index.json, unet/, vae/, "
            "text_encoder/, tokenizer/, scheduler/).") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} cannot be read as JSON ({exc}). The download may be damaged: "
                         "delete the folder and fetch the model again.") from None


def _is_sdxl(folder: Path) -> bool:
    """Whether the folder holds an SDXL base model; the refiner, SDXL inpainting and pipelines
    other than Stable Diffusion's are refused here."""
    index = _read_config(folder, "model_index.json")
    pipeline = index.get("_class_name", "")
    if ("Img2Img" in pipeline and "XL" in pipeline) or index.get("requires_aesthetics_score"):
        raise _unsupported(folder, "model_index.json", f"it is the SDXL refiner ({pipeline}, conditioned on an "
                           "aesthetic score): it refines the base model's images and is not a base to train; "
                           "use stabilityai/stable-diffusion-xl-base-1.0")
    if "XL" in pipeline and "Inpaint" in pipeline:
        raise _unsupported(folder, "model_index.json", f"it is an SDXL inpainting model ({pipeline})")
    if pipeline == _SDXL_PIPELINE or "text_encoder_2" in index:
        return True
    if pipeline not in ("StableDiffusionPipeline", ""):
        raise _unsupported(folder, "model_index.json", f"its pipeline is {pipeline}")
    return False


def _check_unet(folder: Path, unet: dict, sdxl: bool) -> None:
    extra = unet.get("addition_embed_type")
    if extra and not (sdxl and extra == "text_time"):
        raise _unsupported(folder, "unet/config.json",
                           f"the UNet takes extra embeddings (addition_embed_type={extra!r}, as SDXL does) "
                           f"but the pipeline is not {_SDXL_PIPELINE}")
    if sdxl and extra != "text_time":
        raise _unsupported(folder, "unet/config.json", "the UNet of this SDXL pipeline has no text_time "
                           f"micro-conditioning (addition_embed_type={extra!r})")
    if unet.get("in_channels", 4) != 4:
        raise _unsupported(folder, "unet/config.json",
                           f"the UNet has in_channels={unet['in_channels']} (an inpainting or depth model; "
                           "4 is a text-to-image model)")


def _family(folder: Path) -> str:
    text_encoder = _read_config(folder, "text_encoder/config.json")
    activation = text_encoder.get("hidden_act")
    architectures = text_encoder.get("architectures") or ["CLIPTextModel"]
    if architectures != ["CLIPTextModel"] or activation not in _FAMILY_BY_ACTIVATION:
        raise _unsupported(folder, "text_encoder/config.json",
                           f"its text encoder is {architectures[0]} with hidden_act={activation!r} "
                           "(SD 1.x: CLIPTextModel with quick_gelu; SD 2.x: CLIPTextModel with gelu)")
    return _FAMILY_BY_ACTIVATION[activation]


def _sdxl_family(folder: Path) -> str:
    for name, (architecture, activation) in _SDXL_TEXT_ENCODERS.items():
        config = _read_config(folder, f"{name}/config.json")
        found = ((config.get("architectures") or [architecture])[0], config.get("hidden_act"))
        if found != (architecture, activation):
            raise _unsupported(folder, f"{name}/config.json", f"its {name} is {found[0]} with hidden_act="
                               f"{found[1]!r} (SDXL: {architecture} with {activation})")
    return "sdxl"


def _prediction_type(folder: Path) -> str:
    scheduler = _read_config(folder, "scheduler/scheduler_config.json")
    prediction = scheduler.get("prediction_type", "epsilon")
    if prediction not in _PREDICTION_TYPES:
        raise _unsupported(folder, "scheduler/scheduler_config.json",
                           f"its scheduler has prediction_type={prediction!r} (supported: epsilon, v_prediction)")
    return prediction


def _unsupported(folder: Path, relative: str, why: str) -> ModelError:
    return ModelError(
        f"The model in {folder} is not one this tool can train: {relative} shows {why}. "
        f"Supported are {_SUPPORTED}; pick such a base model with --model.")
