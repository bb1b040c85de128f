"""SD 2.x text-encoder weights in the original (OpenCLIP) single-file layout.

SD 2.x conditions on the output of the penultimate layer of OpenCLIP ViT-H/14's
text transformer. Diffusers stores that encoder as a `CLIPTextModel` holding only
the layers in use (23 of 24) and no `text_projection`; original checkpoints, and
the loaders of AUTOMATIC1111 and ComfyUI, hold the whole OpenCLIP text model
under `cond_stage_model.model.`: fused q/k/v (`attn.in_proj_weight`), the final
layer, `text_projection` and `logit_scale`.

None of those three affect the SD 2.x conditioning. What the export writes for
them ("extras"):

- the base model's own, when the base was a single file: the conversion to
  diffusers saves them beside the text encoder (`EXTRAS_FILE`), because
  training never changes them, so the exported file holds what an original
  trainer would have written;
- otherwise neutral values: a final layer whose attention and MLP output
  projections are zero (with unit layer norms), which makes it an exact
  identity, so even a loader that reads the last layer instead of the
  penultimate one gets the same conditioning; an identity `text_projection`
  (width x width, as ViT-H/14's is); and OpenCLIP's initial
  `logit_scale`, log(1 / 0.07).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from dreambooth_core.errors import ModelError

if TYPE_CHECKING:
    import torch

OPENCLIP_PREFIX = "cond_stage_model.model."
EXTRAS_FILE = "text_encoder/original_openclip_extras.safetensors"

_LAYER_PARTS = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
_FIXED_KEYS = {"embeddings.token_embedding.weight": "token_embedding.weight",
               "embeddings.position_embedding.weight": "positional_embedding",
               "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}


def to_openclip_state(text_encoder,
                      extras: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The text encoder's weights under original SD 2.x names, plus the extras (see module doc).

    `extras` (keys without the prefix, as `read_extras` returns them) replace the neutral values.
    """
    state = {key.removeprefix("text_model."): t.detach() for key, t in text_encoder.state_dict().items()}
    state.pop("embeddings.position_ids", None)  # a constant 0..76 index, not a weight
    renamed = _rename_fixed(state) | _rename_layers(state, text_encoder.config.num_hidden_layers)
    if state:
        raise ModelError(
            f"The SD 2.x text encoder has {len(state)} weight(s) with no place in the original layout: "
            f"{', '.join(sorted(state)[:5])}. Merge or remove adapters (e.g. LoRA) before exporting.")
    renamed |= _checked_extras(text_encoder, extras) if extras else neutral_extras(text_encoder)
    return {OPENCLIP_PREFIX + key: tensor.contiguous() for key, tensor in renamed.items()}


def sdxl_openclip_state(text_encoder_2, prefix: str) -> dict[str, torch.Tensor]:
    """SDXL's second text encoder (a CLIPTextModelWithProjection holding all of OpenCLIP
    ViT-bigG's layers) under original names: fused q/k/v, and `text_projection` as OpenCLIP
    multiplies by it (the transpose of the diffusers linear layer's weight)."""
    import torch

    state = {key.removeprefix("text_model."): t.detach() for key, t in text_encoder_2.state_dict().items()}
    state.pop("embeddings.position_ids", None)
    projection = state.pop("text_projection.weight").t()
    renamed = _rename_fixed(state) | _rename_layers(state, text_encoder_2.config.num_hidden_layers)
    if state:
        raise ModelError(
            f"SDXL's second text encoder has {len(state)} weight(s) with no place in the original layout: "
            f"{', '.join(sorted(state)[:5])}. Merge or remove adapters (e.g. LoRA) before exporting.")
    renamed |= {"text_projection": projection,
                "logit_scale": torch.tensor(math.log(1 / 0.07), dtype=projection.dtype)}  # unused by SDXL
    return {prefix + key: tensor.contiguous() for key, tensor in renamed.items()}


def neutral_extras(text_encoder) -> dict[str, torch.Tensor]:
    """Final layer (an exact identity), identity text_projection and OpenCLIP's initial logit_scale."""
    import torch

    config = text_encoder.config
    width, inner = config.hidden_size, config.intermediate_size
    like = text_encoder.get_input_embeddings().weight
    zeros, ones = (lambda *shape: torch.zeros(shape, dtype=like.dtype)), \
        (lambda n: torch.ones(n, dtype=like.dtype))
    layer = f"transformer.resblocks.{config.num_hidden_layers}."
    shapes = {"attn.in_proj_weight": (3 * width, width), "attn.in_proj_bias": (3 * width,),
              "attn.out_proj.weight": (width, width), "attn.out_proj.bias": (width,),
              "ln_1.bias": (width,), "ln_2.bias": (width,), "mlp.c_fc.weight": (inner, width),
              "mlp.c_fc.bias": (inner,), "mlp.c_proj.weight": (width, inner), "mlp.c_proj.bias": (width,)}
    extras = {layer + name: zeros(*shape) for name, shape in shapes.items()}
    extras |= {layer + "ln_1.weight": ones(width), layer + "ln_2.weight": ones(width),
               "text_projection": torch.eye(width, dtype=like.dtype),
               "logit_scale": torch.tensor(math.log(1 / 0.07), dtype=like.dtype)}
    return extras


def read_extras(single_file: Path, kept_layers: int) -> dict[str, torch.Tensor]:
    """The final layer, text_projection and logit_scale of an original SD 2.x single file.

    `kept_layers` is the diffusers text encoder's layer count: the final layer is the one after.
    Keys come without the prefix; those the file lacks are left out (the export then uses
    neutral values for them).
    """
    from safetensors import safe_open

    wanted = re.compile(re.escape(OPENCLIP_PREFIX)
                        + rf"(transformer\.resblocks\.{kept_layers}\..+|text_projection|logit_scale)")
    with safe_open(str(single_file), framework="pt") as weights:
        found = {key.removeprefix(OPENCLIP_PREFIX): weights.get_tensor(key)
                 for key in weights.keys() if wanted.fullmatch(key)}
    return found


def save_extras(single_file: Path, folder: Path) -> bool:
    """Keep an SD 2.x single file's extras in the diffusers `folder` converted from it.

    Returns whether the file had them (SD 1.x files and files written without them do not).
    """
    import json

    from safetensors.torch import save_file

    config = Path(folder) / "text_encoder" / "config.json"
    if not config.is_file():
        return False
    extras = read_extras(single_file, json.loads(config.read_text())["num_hidden_layers"])
    if extras:
        save_file(extras, str(Path(folder) / EXTRAS_FILE), metadata={"format": "pt"})
    return bool(extras)


def load_extras(model_path: str | Path) -> dict[str, torch.Tensor] | None:
    """The extras kept in a diffusers folder converted from an SD 2.x single file, else None."""
    from safetensors.torch import load_file

    path = Path(model_path) / EXTRAS_FILE
    return load_file(path) if path.is_file() else None


def _checked_extras(text_encoder, extras: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Neutral values, replaced by the base model's own where given."""
    neutral = neutral_extras(text_encoder)
    wrong = [k for k, t in extras.items() if k not in neutral or tuple(t.shape) != tuple(neutral[k].shape)]
    if wrong:
        raise ModelError(
            f"The base model's final text-encoder layer / text_projection ({EXTRAS_FILE}) do not fit the "
            f"text encoder being exported ({', '.join(wrong[:3])} unknown or of another shape). The base "
            "single file and the trained model differ in architecture; delete that file to export "
            "neutral values instead.")
    return neutral | {key: tensor.to(neutral[key].dtype) for key, tensor in extras.items()}


def _rename_fixed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {original: state.pop(key) for key, original in _FIXED_KEYS.items() if key in state}


def _rename_layers(state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    import torch

    renamed = {}
    for index in range(layers):
        before, after = f"encoder.layers.{index}.", f"transformer.resblocks.{index}."
        for param in ("weight", "bias"):
            fused = [f"{before}self_attn.{p}_proj.{param}" for p in "qkv"]  # OpenCLIP: one q,k,v matrix
            if all(name in state for name in fused):
                renamed[f"{after}attn.in_proj_{param}"] = torch.cat([state.pop(name) for name in fused])
            for diffusers_name, original_name in _LAYER_PARTS.items():
                if f"{before}{diffusers_name}.{param}" in state:
                    renamed[f"{after}{original_name}.{param}"] = \
                        state.pop(f"{before}{diffusers_name}.{param}")
    return renamed
