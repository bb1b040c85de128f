"""The base model's own text tokenizer, and the rank of each BPE merge it knows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dreambooth_core.errors import ModelError


@dataclass(frozen=True)
class TextTokenizer:
    """A CLIP BPE tokenizer plus `ranks`: merged piece -> position of its merge in merges.txt.

    BPE learns merges in order of frequency, so a low rank means the training
    captions used that piece often."""

    tokenizer: object  # transformers.CLIPTokenizer
    ranks: dict[str, int]

    @property
    def context_length(self) -> int:
        return self.tokenizer.model_max_length

    def pieces(self, text: str) -> list[str]:
        """How the tokenizer splits `text`; a piece ending in '</w>' ends a word."""
        return self.tokenizer.tokenize(text)

    def length(self, text: str) -> int:
        """Tokens `text` takes in the text encoder's context, start and end markers included."""
        return len(self.tokenizer(text, truncation=False).input_ids)


def read_merge_ranks(merges_file: Path) -> dict[str, int]:
    lines = Path(merges_file).read_text(encoding="utf-8").splitlines()
    pairs = [line.split() for line in lines if line and not line.startswith("#version")]
    ranks: dict[str, int] = {}
    for rank, pair in enumerate(pairs):
        ranks.setdefault("".join(pair), rank)
    return ranks


def load_tokenizer(model_path: str | Path) -> TextTokenizer:
    """The tokenizer of a diffusers model folder (its tokenizer/ sub-folder)."""
    from transformers import CLIPTokenizer

    folder = Path(model_path) / "tokenizer"
    if not (folder / "merges.txt").is_file():
        raise ModelError(f"{folder}: no merges.txt, so this model's tokenizer is not a CLIP BPE "
                         "tokenizer this tool can analyse. Use a Stable Diffusion 1.x or 2.x model.")
    return TextTokenizer(CLIPTokenizer.from_pretrained(folder), read_merge_ranks(folder / "merges.txt"))
