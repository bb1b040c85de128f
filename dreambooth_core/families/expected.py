"""The training resolution as far as it is known before a model is fetched, for the photo checks."""

from __future__ import annotations

from pathlib import Path

from dreambooth_core.families import TINY_MODELS, detect_family
from dreambooth_core.families.sd_model_spec import declared_spec

# The smallest native resolution of the supported models (SD 1.x, SD 2.x 512 px): what photos are
# judged against before a downloaded model's own is known.
SMALLEST_RESOLUTION = 512


def expected_resolution(spec: str, override: int | None) -> tuple[int, str]:
    """(resolution, where it comes from): --resolution when given, a built-in tiny model's own,
    a local diffusers folder's own, what a local .safetensors declares (model-spec header),
    otherwise SMALLEST_RESOLUTION (no photo a 512 px model could use is refused; for
    a 768 px or 1024 px model pass --resolution to be warned about smaller photos)."""
    if override:
        return override, "--resolution"
    if spec in TINY_MODELS:
        return TINY_MODELS[spec].resolution, "the tiny model's resolution"
    local = _local_resolution(Path(spec))
    if local:
        return local
    return SMALLEST_RESOLUTION, (f"{SMALLEST_RESOLUTION}, the smallest resolution of the supported "
                                 "models; pass --resolution for another")


def _local_resolution(path: Path) -> tuple[int, str] | None:
    """A local folder no family takes is refused here (ModelError), before the photos are judged
    against a resolution it does not have."""
    if path.is_dir() and (path / "model_index.json").is_file():
        return detect_family(path).resolution, "the local model's resolution"
    try:
        if path.is_file():
            _, declared = declared_spec(path)
            return (declared, "the resolution the single file declares") if declared else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None
