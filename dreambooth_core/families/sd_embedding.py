"""Textual-inversion embeddings, written in the formats AUTOMATIC1111, ComfyUI and diffusers load.

For each token, into one folder:
- `<token>.safetensors`: `{"emb_params": vectors}` (vectors: one row per token
  vector, text-encoder width columns). AUTOMATIC1111 and ComfyUI name an
  embedding after its file, so the prompt word is the file name.
- `<token>.pt` (optional): AUTOMATIC1111's own layout, `{"string_to_param":
  {"*": vectors}, "string_to_token": {"*": 265}, "name": token, "step": step}`;
  only tensors, strings and numbers, so `torch.load(weights_only=True)` reads it.
- `<token>-diffusers/learned_embeds.safetensors`: `{token: vectors}`, what
  diffusers' textual-inversion training writes and `load_textual_inversion(folder)`
  reads (a token with several vectors becomes token, token_1, token_2...).

SDXL has a vector set per text encoder: `<token>.safetensors` holds `clip_l` (the
first encoder's) and `clip_g` (the second's), the form AUTOMATIC1111 and ComfyUI read
for SDXL; the diffusers folder holds `learned_embeds.safetensors` for the first and
`learned_embeds_2.safetensors` for the second (load each with the matching
`text_encoder=` / `tokenizer=`); AUTOMATIC1111's .pt has no SDXL form and is not written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from dreambooth_core.errors import ConfigError
from dreambooth_core.model.safetensors_files import save_safetensors

if TYPE_CHECKING:
    import torch

DIFFUSERS_FILE = "learned_embeds.safetensors"
DIFFUSERS_FILE_2 = "learned_embeds_2.safetensors"
# AUTOMATIC1111 stores the id of "*" in CLIP's vocabulary here; its loader reads only string_to_param.
_A1111_PLACEHOLDER_ID = 265
_FILE_SAFE_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class EmbeddingFiles(BaseModel):
    """The files an embedding export wrote, with their sizes in bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sizes: dict[str, int] = Field(description="Bytes of each written file, by path.")


def export_embeddings(embeddings: Mapping[str, torch.Tensor], out_dir: Path, step: int | None = None,
                      write_pt: bool = True,
                      second: Mapping[str, torch.Tensor] | None = None) -> EmbeddingFiles:
    """Write every token's learned vectors (token -> tensor of shape (vectors, width) or (width,));
    `second`: SDXL's vectors for its second text encoder, by the same tokens."""
    sizes: dict[str, int] = {}
    for token, vectors in embeddings.items():
        if second is None:
            sizes |= export_embedding(token, vectors, out_dir, step, write_pt).sizes
        else:
            sizes |= export_sdxl_embedding(token, vectors, second[token], out_dir).sizes
    return EmbeddingFiles(sizes=sizes)


def export_sdxl_embedding(token: str, clip_l: torch.Tensor, clip_g: torch.Tensor,
                          out_dir: Path) -> EmbeddingFiles:
    """Write one token's SDXL embedding (both encoders' vectors), as the module doc says."""
    clip_l, clip_g = _checked_vectors(token, clip_l), _checked_vectors(token, clip_g)
    if clip_l.shape[0] != clip_g.shape[0]:
        raise ConfigError(f"The SDXL embedding for {token!r} has {clip_l.shape[0]} vector(s) for the first "
                          f"text encoder but {clip_g.shape[0]} for the second; both need the same number.")
    out_dir = Path(out_dir)
    (out_dir / f"{token}-diffusers").mkdir(parents=True, exist_ok=True)
    files = [out_dir / f"{token}.safetensors", out_dir / f"{token}-diffusers" / DIFFUSERS_FILE,
             out_dir / f"{token}-diffusers" / DIFFUSERS_FILE_2]
    save_safetensors({"clip_l": clip_l, "clip_g": clip_g}, files[0])
    save_safetensors({token: clip_l}, files[1])
    save_safetensors({token: clip_g}, files[2])
    return EmbeddingFiles(sizes={str(file): file.stat().st_size for file in files})


def export_embedding(token: str, vectors: torch.Tensor, out_dir: Path, step: int | None = None,
                     write_pt: bool = True) -> EmbeddingFiles:
    """Write one token's embedding in the three formats of the module doc."""
    import torch

    vectors = _checked_vectors(token, vectors)
    out_dir = Path(out_dir)
    (out_dir / f"{token}-diffusers").mkdir(parents=True, exist_ok=True)
    files = [out_dir / f"{token}.safetensors", out_dir / f"{token}-diffusers" / DIFFUSERS_FILE]
    save_safetensors({"emb_params": vectors}, files[0])
    save_safetensors({token: vectors}, files[1])
    if write_pt:
        files.append(out_dir / f"{token}.pt")
        torch.save({"string_to_token": {"*": _A1111_PLACEHOLDER_ID}, "string_to_param": {"*": vectors},
                    "name": token, "step": step}, files[-1])
    return EmbeddingFiles(sizes={str(file): file.stat().st_size for file in files})


def _checked_vectors(token: str, vectors: torch.Tensor) -> torch.Tensor:
    if not _FILE_SAFE_TOKEN.fullmatch(token):
        raise ConfigError(
            f"The token {token!r} cannot name an embedding file (AUTOMATIC1111 uses the file name as the "
            "prompt word): use letters, digits, '.', '_' or '-', starting with a letter or digit.")
    if vectors.ndim not in (1, 2) or vectors.shape[-1] == 0:
        raise ConfigError(
            f"The embedding for {token!r} has shape {tuple(vectors.shape)}; expected (width,) or "
            "(vectors, width), one row per vector of the text encoder's width.")
    return vectors.detach().reshape(-1, vectors.shape[-1]).to("cpu").contiguous()
