"""The training resolution as far as it is known before a model is fetched, for the photo checks."""

from __future__ import annotations

import json
from pathlib import Path

from dreambooth_core.model.family import SMALLEST_SD_RESOLUTION, resolution_of
from dreambooth_core.model.model_spec import declared_spec
from dreambooth_core.model.tiny import tiny_resolution


def expected_resolution(spec: str, override: int | None) -> tuple[int, str]:
    """(resolution, where it comes from): --resolution when given, a built-in tiny model's own,
    a local diffusers folder's own, what a local .safetensors declares (model-spec header),
    otherwise SMALLEST_SD_RESOLUTION (no photo an SD 1.x model could use is refused; for
    SD 2.1-768 pass --resolution 768 to be warned about smaller photos)."""
    if override:
        return override, "--resolution"
    if tiny_resolution(spec):
        return tiny_resolution(spec), "the tiny model's resolution"
    local = _local_resolution(Path(spec))
    if local:
        return local
    return SMALLEST_SD_RESOLUTION, (f"{SMALLEST_SD_RESOLUTION}, the smallest resolution of Stable "
                                    "Diffusion models; pass --resolution for another")


def _local_resolution(path: Path) -> tuple[int, str] | None:
    try:
        if path.is_file():
            _, declared = declared_spec(path)
            return (declared, "the resolution the single file declares") if declared else None
        unet = json.loads((path / "unet" / "config.json").read_text())
        vae = json.loads((path / "vae" / "config.json").read_text())
        return resolution_of(unet, vae), "the local model's resolution"
    except (OSError, ValueError, KeyError, TypeError):
        return None
