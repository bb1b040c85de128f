"""Whether the weights of a diffusers folder fit its configs, told without loading a weight.

A folder whose parts do not belong together (a copy that stopped halfway, a unet/ taken from
another model, a config edited by hand) otherwise fails deep inside diffusers or transformers
("Cannot load ... expected shape ..."), or worse, loads with tensors left uninitialised.
Here each part's model is built from its own config on the meta device (shapes only, no
memory, milliseconds) and its tensors are compared with the shapes in the part's .safetensors
headers (weights_file.py).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from dreambooth_core.errors import ModelError
from dreambooth_core.model.weights_file import WeightsFileProblem, safetensors_shapes

# The file each library loads (no variant), or the index of its shards.
_WEIGHTS = {"diffusers": "diffusion_pytorch_model.safetensors", "transformers": "model.safetensors"}
# Names diffusers still accepts from before its attention blocks were renamed (its
# `_fix_state_dict_keys_on_load`), and the prefix transformers before 5.0 gave CLIP's weights.
_OLD_ATTENTION_NAMES = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.",
                        ".proj_attn.": ".to_out.0."}
_OLD_PREFIX = "text_model."
_SHOWN = 3  # differences quoted in the message; the rest are counted


def check_folder_weights(folder: Path, spec: str, fix: str) -> None:
    """Raise one ModelError naming every part of the diffusers folder `folder` whose weights do
    not fit its config: the part, a tensor, the shape the config makes and the one found.
    `fix`: what the user should do, for the message."""
    folder = Path(folder)
    problems = [problem for part, library, name in _weight_parts(folder)
                if (problem := _part_problem(folder, part, library, name))]
    if problems:
        raise ModelError(f"Model folder {spec!r} does not fit together: {'; '.join(problems)}. "
                         f"{fix}")


def _weight_parts(folder: Path) -> list[tuple[str, str, str]]:
    """(part, library, class name) of every part of model_index.json with a config and weights."""
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    parts = []
    for part, entry in sorted(index.items()):
        if (isinstance(entry, list) and len(entry) == 2 and entry[0] in _WEIGHTS
                and (folder / part / "config.json").is_file() and _weight_files(folder / part, entry[0])):
            parts.append((part, entry[0], entry[1]))
    return parts


def _weight_files(part: Path, library: str) -> list[Path]:
    name = _WEIGHTS[library]
    index = part / f"{name}.index.json"
    if index.is_file():
        shards = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()
        return [part / shard for shard in sorted(set(shards))]
    return [part / name] if (part / name).is_file() else []


def _part_problem(folder: Path, part: str, library: str, class_name: str) -> str | None:
    files = _weight_files(folder / part, library)
    shown_files = ", ".join(f"{part}/{file.name}" for file in files)
    found: dict[str, list[int]] = {}
    for file in files:
        try:
            found.update(safetensors_shapes(file))
        except (WeightsFileProblem, FileNotFoundError) as problem:
            return f"{part}/{file.name} is {problem}"
    expected = _expected_shapes(folder / part, library, class_name)
    if expected is None:
        return None
    found = {_current_name(name, library): shape for name, shape in found.items()}
    expected = {name.removeprefix(_OLD_PREFIX): shape for name, shape in expected.items()}
    differ = [f"{name} is {found[name]} where the config makes {shape}"
              for name, shape in expected.items() if name in found and found[name] != shape]
    missing = [name for name in expected if name not in found]
    if not differ and not missing:
        return None
    said = [f"tensor {', tensor '.join(differ[:_SHOWN])}"] if differ else []
    if len(differ) > _SHOWN:
        said.append(f"{len(differ) - _SHOWN} more tensors differ")
    if missing:
        said.append(f"{len(missing)} tensor(s) the config needs are missing "
                    f"({', '.join(missing[:_SHOWN])}{', ...' if len(missing) > _SHOWN else ''})")
    return f"the {part}'s weights ({shown_files}) do not match {part}/config.json: {'; '.join(said)}"


def _current_name(name: str, library: str) -> str:
    if library == "transformers":
        return name.removeprefix(_OLD_PREFIX)
    for old, new in _OLD_ATTENTION_NAMES.items():
        name = name.replace(old, new)
    return name


def _expected_shapes(part: Path, library: str, class_name: str) -> dict[str, list[int]] | None:
    """The shapes the part's config gives its model (None for a class this check does not know)."""
    import torch

    model_class = getattr(importlib.import_module(library), class_name, None)
    if model_class is None:
        return None
    try:
        with torch.device("meta"):  # parameters get shapes, not memory
            if library == "diffusers":
                model = model_class.from_config(model_class.load_config(part))
            else:
                model = model_class(model_class.config_class.from_pretrained(part))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{part / 'config.json'} does not describe a {class_name} ({type(exc).__name__}: "
                         f"{exc}). Restore the model's own config.json.") from None
    return {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
