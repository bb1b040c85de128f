"""The model families the tool trains, one module each behind one interface (family.py).

This registry is how the rest of the tool reaches them: `detect_family` reads which family a
diffusers folder holds, `family_of` gives the family of recorded facts, and the tiny models and
published architectures of every family are listed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dreambooth_core.errors import ModelError
from dreambooth_core.families.family import (
    Architecture,
    Family,
    ModelFamily,
    ModelParts,
    TinyModel,
    read_config,
    supported,
    unsupported,
)
from dreambooth_core.families.flux import FLUX
from dreambooth_core.families.flux2_klein import FLUX2_KLEIN
from dreambooth_core.families.sdxl import SDXL
from dreambooth_core.families.stable_diffusion import STABLE_DIFFUSION

if TYPE_CHECKING:
    import torch

    from dreambooth_core.families.quantised import BasePrecision

# In the order they are tried: a family that refuses look-alikes of itself comes first.
FAMILIES: tuple[Family, ...] = (SDXL, STABLE_DIFFUSION, FLUX, FLUX2_KLEIN)
SUPPORTED = supported()
TINY_MODELS: dict[str, TinyModel] = {tiny.spec: tiny for family in FAMILIES for tiny in family.tiny_models}
ARCHITECTURES: dict[str, Architecture] = {a.name: a for family in FAMILIES for a in family.architectures}
HUB_REPOS: dict[str, str] = {repo: a.name for a in ARCHITECTURES.values() for repo in a.repos}
_BY_KEY = {key: family for family in FAMILIES for key in family.keys}


def family_of(facts: ModelFamily | str) -> Family:
    key = facts if isinstance(facts, str) else facts.family
    try:
        return _BY_KEY[key]
    except KeyError:
        raise ModelError(f"model family {key!r} is unknown to this version of the tool (it knows "
                         f"{', '.join(_BY_KEY)}); was the session trained by a newer one?") from None


def detect_family(model_path: str | Path) -> ModelFamily:
    """The family, prediction type and native resolution of the diffusers folder `model_path`, read
    from its own configs (never guessed from its name); a ModelError naming the file and field that
    show an architecture this tool cannot train."""
    folder = Path(model_path)
    index = read_config(folder, "model_index.json")
    for family in FAMILIES:
        found = family.recognise(folder, index)
        if found is not None:
            return found
    raise unsupported(folder, "model_index.json", f"its pipeline is {index.get('_class_name')}")


def family_of_folder(model_path: str | Path) -> Family:
    return family_of(detect_family(model_path))


def load_model_parts(model_path: str | Path, device: torch.device, weights: bool = True,
                     base: BasePrecision | None = None) -> ModelParts:
    """The parts of the model in a diffusers folder, as its family loads them (fp32, on `device`);
    without `weights`, built from the configs alone; with a quantised `base`, the denoiser and text
    encoders quantised (quantised.py)."""
    return family_of_folder(model_path).load_parts(model_path, device, weights, base)


def single_file_family(keys: set[str], source: str) -> Family:
    """The family whose single-file layout these weight names are."""
    for family in FAMILIES:
        if family.recognises_single_file(keys):
            return family
    raise ModelError(f"{source} is not a single file of a model this tool trains (its keys match none of "
                     f"{SUPPORTED}). Check that it is a whole checkpoint, not a LoRA, embedding or "
                     "VAE alone.")


def write_config_folder(architecture: str, folder: Path) -> Path:
    """A diffusers folder holding only the configs of a published architecture (a key of ARCHITECTURES)."""
    return ARCHITECTURES[architecture].write(Path(folder))


__all__ = ["ARCHITECTURES", "FAMILIES", "HUB_REPOS", "SUPPORTED", "TINY_MODELS", "Architecture", "Family",
           "ModelFamily", "ModelParts", "TinyModel", "detect_family", "family_of", "family_of_folder",
           "load_model_parts", "single_file_family", "write_config_folder"]
