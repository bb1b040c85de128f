"""Stability AI model-spec metadata: what a single file says about itself.

The original single-file layout has no place for what the UNet predicts or the
size it was trained at; a .safetensors header does, under the `modelspec.*`
keys of Stability AI's model spec (also written by kohya's scripts). The export
writes them, and converting a single file reads them back: diffusers borrows the
scheduler and UNet configs from `--single-file-config` or, without it, from a
default repo per architecture (for SD 2.x the 768 px v-prediction SD 2.1), which
may not be what the file holds. What the file declares wins over what was borrowed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from dreambooth_core.families.family import ModelFamily, vae_scale

_PREDICTION_NAMES = {"epsilon": "epsilon", "v_prediction": "v"}


def model_spec_metadata(family: ModelFamily, title: str) -> dict[str, str]:
    """The model-spec entries for a single file of `family` (dreambooth_core.families.detect_family)."""
    if family.family == "sd1":
        architecture, implementation = "stable-diffusion-v1", "https://github.com/CompVis/stable-diffusion"
    elif family.family == "sdxl":
        architecture, implementation = ("stable-diffusion-xl-v1-base",
                                        "https://github.com/Stability-AI/generative-models")
    else:
        v = family.prediction_type == "v_prediction"
        architecture = "stable-diffusion-v2-768-v" if v else "stable-diffusion-v2-512"
        implementation = "https://github.com/Stability-AI/stablediffusion"
    return {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": architecture,
            "modelspec.implementation": implementation, "modelspec.title": title,
            "modelspec.resolution": f"{family.resolution}x{family.resolution}",
            "modelspec.prediction_type": _PREDICTION_NAMES[family.prediction_type]}


def base_model_keys(family: ModelFamily) -> dict[str, str]:
    """What a file trained on `family` says of its base model: the model-spec architecture and
    kohya's `ss_base_model_version` / `ss_v2` (AUTOMATIC1111 tells SDXL and SD 2 networks by them)."""
    spec = model_spec_metadata(family, "")
    version = {"sd1": "sd_v1", "sdxl": "sdxl_base_v1-0"}.get(family.family) or (
        "sd_v2_v" if family.prediction_type == "v_prediction" else "sd_v2")
    return {key: spec[key] for key in ("modelspec.architecture", "modelspec.implementation",
                                       "modelspec.prediction_type")} | {
        "ss_base_model_version": version, "ss_v2": str(family.family == "sd2")}


def declared_spec(single_file: Path) -> tuple[str | None, int | None]:
    """(prediction type, square resolution) a .safetensors file declares; None for what it does not."""
    from safetensors import safe_open

    if Path(single_file).suffix.lower() != ".safetensors":
        return None, None
    with safe_open(str(single_file), framework="pt") as file:
        metadata = file.metadata() or {}
    prediction = {v: k for k, v in _PREDICTION_NAMES.items()}.get(
        metadata.get("modelspec.prediction_type", ""))
    width, _, height = metadata.get("modelspec.resolution", "").partition("x")
    resolution = int(width) if width.isdigit() and width == height else None
    return prediction, resolution


def apply_declared_spec(single_file: Path, folder: Path, log: logging.Logger) -> None:
    """Make the converted diffusers `folder` say what `single_file` declares about itself."""
    prediction, resolution = declared_spec(single_file)
    folder = Path(folder)
    if prediction:
        _set_config_value(folder / "scheduler" / "scheduler_config.json", "prediction_type", prediction, log)
    if resolution:
        vae = json.loads((folder / "vae" / "config.json").read_text())
        _set_config_value(folder / "unet" / "config.json", "sample_size", resolution // vae_scale(vae), log)


def _set_config_value(config: Path, field: str, value, log: logging.Logger) -> None:
    data = json.loads(config.read_text())
    if data.get(field, "epsilon" if field == "prediction_type" else None) == value:
        return
    log.warning("The single file declares %s=%r, the borrowed config %s said %r: using the file's.",
                field, value, config.parent.name + "/" + config.name, data.get(field))
    config.write_text(json.dumps({**data, field: value}, indent=2, sort_keys=True) + "\n")
