"""The DreamBooth paper's fidelity metrics, computed from image and text embeddings.

- subject fidelity: the mean cosine similarity of every (generated, real photo) pair of
  image embeddings; DINO ViT-S/16 embeddings give "DINO", CLIP ViT-L/14 ones "CLIP-I".
- prompt fidelity ("CLIP-T"): the mean cosine similarity of each generated image's CLIP
  embedding with the CLIP text embedding of its prompt, written without the identifier.

Each metric is the mean over generated images of a per-image value; the spread is the
standard deviation of those per-image values (0 for a single image).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict


class MetricValue(BaseModel):
    model_config = ConfigDict(frozen=True)
    mean: float
    spread: float

    @classmethod
    def of(cls, per_image: torch.Tensor) -> MetricValue:
        values = per_image.double()
        return cls(mean=values.mean().item(), spread=values.std(unbiased=False).item())


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, m) cosine similarities of the rows of `a` (n, d) with the rows of `b` (m, d)."""
    a, b = a.double(), b.double()
    return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T


def subject_fidelity(generated: torch.Tensor, real: torch.Tensor) -> MetricValue:
    """`generated` (n, d) and `real` (m, d) image embeddings from the same model."""
    _check_rows(generated, real)
    return MetricValue.of(cosine_matrix(generated, real).mean(dim=1))


def prompt_fidelity(generated: torch.Tensor, prompts: torch.Tensor) -> MetricValue:
    """`generated` (n, d) CLIP image embeddings and `prompts` (n, d): the text embedding of
    each image's own prompt, row for row."""
    _check_rows(generated, prompts)
    if generated.shape[0] != prompts.shape[0]:
        raise ValueError(f"{generated.shape[0]} images but {prompts.shape[0]} prompt embeddings: "
                         "pass one prompt embedding per image")
    return MetricValue.of(cosine_matrix(generated, prompts).diagonal())


def _check_rows(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"embeddings of shapes {tuple(a.shape)} and {tuple(b.shape)}: expected "
                         "non-empty (rows, width) tensors of one width")
