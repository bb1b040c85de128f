"""The base model's own text tokenizer, and the rank of each BPE merge it knows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dreambooth_core.errors import ModelError

SECOND_TOKENIZER = "tokenizer_2"


@dataclass(frozen=True)
class TextTokenizer:
    """A CLIP BPE tokenizer plus `ranks`: merged piece -> position of its merge in the BPE merges.

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


def merge_ranks(pairs) -> dict[str, int]:
    ranks: dict[str, int] = {}
    for rank, pair in enumerate(pairs):
        ranks.setdefault("".join(pair), rank)
    return ranks


def read_merge_ranks(merges_file: Path) -> dict[str, int]:
    lines = Path(merges_file).read_text(encoding="utf-8").splitlines()
    return merge_ranks(line.split() for line in lines if line and not line.startswith("#version"))


def bpe_of(tokenizer_json: dict) -> tuple[dict[str, int], list[tuple[str, ...]]]:
    """(vocabulary, merges in rank order) of a parsed `tokenizer.json` holding a BPE model."""
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(f"its model is {model.get('type')!r}, not BPE")
    # tokenizers writes a merge as "a b" (before 0.20) or as ["a", "b"].
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    return dict(model.get("vocab", {})), merges


def tokenizer_merge_ranks(folder: Path) -> dict[str, int]:
    """The merge ranks from merges.txt or, where a model has only that, from tokenizer.json."""
    if (folder / "merges.txt").is_file():
        return read_merge_ranks(folder / "merges.txt")
    fast = folder / "tokenizer.json"
    if not fast.is_file():
        raise ModelError(f"{folder}: neither merges.txt nor tokenizer.json, so this model has no CLIP BPE "
                         "tokenizer this tool can analyse. Use a Stable Diffusion 1.x or 2.x model.")
    try:
        _, merges = bpe_of(json.loads(fast.read_text(encoding="utf-8")))
    except (ValueError, AttributeError) as exc:
        raise ModelError(f"{fast} is not a CLIP BPE tokenizer this tool can analyse ({exc}). "
                         "Use a Stable Diffusion 1.x or 2.x model.") from exc
    return merge_ranks(merges)


def load_tokenizer(model_path: str | Path, subfolder: str = "tokenizer") -> TextTokenizer:
    """The tokenizer of a diffusers model folder (its tokenizer/ sub-folder), in any of its saved forms:
    vocab.json + merges.txt, tokenizer.json, or both."""
    from transformers import CLIPTokenizer

    folder = Path(model_path) / subfolder
    ranks = tokenizer_merge_ranks(folder)
    return TextTokenizer(CLIPTokenizer.from_pretrained(folder), ranks)


def load_second_tokenizer(model_path: str | Path) -> TextTokenizer | None:
    """SDXL's second tokenizer (tokenizer_2/: CLIP's BPE, padding with "!"); None for a model with one."""
    folder = Path(model_path) / SECOND_TOKENIZER
    return load_tokenizer(model_path, SECOND_TOKENIZER) if folder.is_dir() else None
