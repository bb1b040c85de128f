"""The base model's own text tokenizers, of the three kinds a word can be judged with.

- CLIP's BPE (Stable Diffusion; FLUX.1's tokenizer/): a piece ending in '</w>' ends a word.
- Byte-level BPE (Qwen2/Qwen3: FLUX.2 [klein]): a piece starting with 'Ġ', the space byte,
  starts a word. Shown decoded, with '▁' for that space.
- SentencePiece Unigram (T5: FLUX.1's tokenizer_2/): a piece starting with '▁' starts a word.

Each carries `ranks`: piece -> how early the tokenizer learnt it. BPE learns merges in
order of frequency, so a piece's rank is that of the merge that made it; a Unigram
vocabulary has a score (log-probability) per piece, so a piece's rank is its position
when the vocabulary is sorted by score. A low rank means the training text used the
piece often; analysis.py decides from it which pieces are words the model knows.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from dreambooth_core.errors import ModelError

SECOND_TOKENIZER = "tokenizer_2"
END_OF_WORD = "</w>"  # CLIP's end-of-word suffix
WORD_START = "▁"  # SentencePiece's start-of-word marker; byte-level pieces are shown with it too
SPACE_BYTE = "Ġ"  # byte-level BPE's stand-in for the space byte
KINDS_READ = ("CLIP's BPE (Stable Diffusion, FLUX.1), byte-level BPE (Qwen: FLUX.2 [klein]) and "
              "SentencePiece Unigram (T5: FLUX.1)")

TokenizerKind = Literal["clip-bpe", "byte-level-bpe", "unigram"]


@dataclass(frozen=True)
class TextTokenizer(ABC):
    """A transformers tokenizer and the rank of each piece it knows (see the module's docstring)."""

    tokenizer: Any  # the transformers tokenizer the pipeline uses
    ranks: dict[str, int]
    # the context the model reads, where it is not the tokenizer's own
    max_length: int | None = None

    kind: ClassVar[TokenizerKind]
    description: ClassVar[str]

    @property
    def context_length(self) -> int:
        return self.max_length or self.tokenizer.model_max_length

    def pieces(self, text: str) -> list[str]:
        """How the tokenizer splits `text` as a word of a prompt, in the form shown to users."""
        return self.tokenizer.tokenize(text)

    def length(self, text: str) -> int:
        """Tokens `text` takes in the text encoder's context, the tokenizer's own markers included."""
        return len(self.tokenizer(text, truncation=False).input_ids)

    @abstractmethod
    def piece_text(self, piece: str) -> str:
        """A shown piece without its word-boundary marker."""

    @abstractmethod
    def word_forms(self, text: str) -> list[str]:
        """The pieces that would stand for `text` as a whole word."""

    def is_prefix(self, pieces: list[str], index: int) -> bool:
        """Whether piece `index` of a word's split only starts it: where a marker starts words, a
        word-start piece followed by more of the word ('▁shr' + 'k'), which the vocabulary holds for
        prefixes as much as for words. (CLIP's whole words end in '</w>': word_forms asks for that.)"""
        return False

    def word_rank(self, text: str) -> int | None:
        """The rank of `text` as a whole word; None when the tokenizer has no such piece."""
        return min((self.ranks[form] for form in self.word_forms(text) if form in self.ranks),
                   default=None)


@dataclass(frozen=True)
class ClipBpeTokenizer(TextTokenizer):
    kind: ClassVar[TokenizerKind] = "clip-bpe"
    description: ClassVar[str] = "CLIP BPE"

    def piece_text(self, piece: str) -> str:
        return piece.removesuffix(END_OF_WORD)

    def word_forms(self, text: str) -> list[str]:
        return [text.lower() + END_OF_WORD]  # CLIP lower-cases all text


@dataclass(frozen=True)
class ByteLevelBpeTokenizer(TextTokenizer):
    kind: ClassVar[TokenizerKind] = "byte-level-bpe"
    description: ClassVar[str] = "byte-level BPE"

    def pieces(self, text: str) -> list[str]:
        # Inside a prompt a word follows a space, which becomes part of its first piece ('Ġshr').
        return [_readable(piece) for piece in self.tokenizer.tokenize(" " + text)] if text else []

    def piece_text(self, piece: str) -> str:
        return piece.removeprefix(WORD_START)

    def is_prefix(self, pieces: list[str], index: int) -> bool:
        return (pieces[index].startswith(WORD_START) and index < len(pieces) - 1
                and not pieces[index + 1].startswith(WORD_START))

    def word_forms(self, text: str) -> list[str]:
        # Qwen keeps case: 'Dog' starting a sentence is the word 'dog' all the same.
        return list(dict.fromkeys(SPACE_BYTE + _byte_level(t) for t in (text, text.lower())))


@dataclass(frozen=True)
class UnigramTokenizer(TextTokenizer):
    kind: ClassVar[TokenizerKind] = "unigram"
    description: ClassVar[str] = "SentencePiece Unigram"

    def piece_text(self, piece: str) -> str:
        return piece.removeprefix(WORD_START)

    def is_prefix(self, pieces: list[str], index: int) -> bool:
        return (pieces[index].startswith(WORD_START) and index < len(pieces) - 1
                and not pieces[index + 1].startswith(WORD_START))

    def word_forms(self, text: str) -> list[str]:
        # T5 keeps case: 'Dog' starting a sentence is the word 'dog' all the same.
        return list(dict.fromkeys(WORD_START + t for t in (text, text.lower())))


@cache
def _byte_table() -> dict[int, str]:
    """Byte -> the printable character byte-level BPE writes it as (GPT-2's table, Qwen's too)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


@cache
def _byte_of() -> dict[str, int]:
    return {char: byte for byte, char in _byte_table().items()}


def _byte_level(text: str) -> str:
    """`text` in byte-level BPE's alphabet: each UTF-8 byte as its printable stand-in."""
    table = _byte_table()
    return "".join(table[b] for b in text.encode("utf-8"))


def _readable(piece: str) -> str:
    """A byte-level piece as text, its leading space as '▁' ('Ġshr' -> '▁shr'); a byte that is
    only part of a character shows as an escape ('\\xc3'). An added token written in other
    characters ('<｜x｜>') stays as it is."""
    byte_of = _byte_of()
    if not all(c in byte_of for c in piece):
        return piece
    text = bytes(byte_of[c] for c in piece).decode("utf-8", errors="backslashreplace")
    return WORD_START + text[1:] if text.startswith(" ") else text


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


def score_ranks(vocab: list) -> dict[str, int]:
    """piece -> its position in a Unigram vocabulary ([piece, score] pairs) sorted by score, best first."""
    order = sorted(range(len(vocab)), key=lambda index: -vocab[index][1])
    return {vocab[index][0]: position for position, index in enumerate(order)}


def load_tokenizer(model_path: str | Path, subfolder: str = "tokenizer", *,
                   context_length: int | None = None) -> TextTokenizer:
    """The tokenizer in a diffusers model's `subfolder`, of the kind its files say, read from disk only.

    CLIP's BPE may be saved as vocab.json + merges.txt, tokenizer.json, or both; byte-level BPE
    the same way; a Unigram tokenizer as tokenizer.json. `context_length`: the tokens the model
    reads, where the pipeline sets it rather than the tokenizer (T5 in FLUX.1 [schnell]: 256)."""
    folder = Path(model_path) / subfolder
    data = _tokenizer_json(folder)
    kind = tokenizer_kind(folder, data)
    if kind is ClipBpeTokenizer:
        from transformers import CLIPTokenizer

        ranks = _bpe_ranks(folder, data)
        return ClipBpeTokenizer(CLIPTokenizer.from_pretrained(folder), ranks, context_length)
    ranks = score_ranks(data["model"]["vocab"]) if kind is UnigramTokenizer else _bpe_ranks(folder, data)
    return kind(_auto_tokenizer(folder, kind), ranks, context_length)


def load_second_tokenizer(model_path: str | Path) -> TextTokenizer | None:
    """A model's second tokenizer (tokenizer_2/: SDXL's CLIP BPE, padding with "!"; FLUX.1's T5);
    None for a model with one."""
    folder = Path(model_path) / SECOND_TOKENIZER
    return load_tokenizer(model_path, SECOND_TOKENIZER) if folder.is_dir() else None


def tokenizer_kind(folder: Path, data: dict | None) -> type[TextTokenizer]:
    """Which kind the tokenizer in `folder` is; `data`: its parsed tokenizer.json, if it has one."""
    if data is not None:
        return _kind_of_tokenizer_json(folder / "tokenizer.json", data)
    found = _files_found(folder)
    if (folder / "merges.txt").is_file():
        if not (folder / "vocab.json").is_file():
            raise ModelError(f"{folder}: merges.txt without vocab.json (found: {found}). Copy the "
                             "model's tokenizer folder again from its source.")
        vocab = _read_json(folder / "vocab.json")
        return ClipBpeTokenizer if any(t.endswith(END_OF_WORD) for t in vocab) else ByteLevelBpeTokenizer
    if (folder / "spiece.model").is_file():
        raise ModelError(f"{folder}: a SentencePiece model (spiece.model) without tokenizer.json "
                         f"(found: {found}). This tool reads SentencePiece from tokenizer.json, "
                         "which the hub's repos ship beside it: copy it into this folder too.")
    raise ModelError(f"{folder}: neither merges.txt nor tokenizer.json (found: {found}), so this "
                     f"model has no tokenizer this tool can analyse. It reads {KINDS_READ}, from "
                     "those files as the hub's diffusers repos hold them.")


def _kind_of_tokenizer_json(file: Path, data: dict) -> type[TextTokenizer]:
    model = data.get("model") or {}
    if model.get("type") == "Unigram":
        return UnigramTokenizer
    if model.get("type") != "BPE":
        raise ModelError(f"{file} is not a CLIP BPE tokenizer nor one of the other kinds this tool "
                         f"can analyse: its model is {model.get('type')!r}. It reads {KINDS_READ}.")
    if model.get("end_of_word_suffix") == END_OF_WORD:
        return ClipBpeTokenizer
    if _has_byte_level(data.get("pre_tokenizer")):
        return ByteLevelBpeTokenizer
    raise ModelError(f"{file} holds a BPE tokenizer that is neither CLIP's (its end_of_word_suffix "
                     f"is {model.get('end_of_word_suffix')!r}, not '</w>') nor byte-level (no "
                     f"ByteLevel pre-tokenizer in {data.get('pre_tokenizer')!r:.120}). It reads "
                     f"{KINDS_READ}.")


def _has_byte_level(pre_tokenizer: dict | None) -> bool:
    if not pre_tokenizer:
        return False
    return pre_tokenizer.get("type") == "ByteLevel" or any(
        _has_byte_level(p) for p in pre_tokenizer.get("pretokenizers") or [])


def _bpe_ranks(folder: Path, data: dict | None) -> dict[str, int]:
    """The merge ranks from merges.txt or, where a model has only that, from tokenizer.json."""
    if (folder / "merges.txt").is_file():
        return read_merge_ranks(folder / "merges.txt")
    return merge_ranks(bpe_of(data)[1])


def _auto_tokenizer(folder: Path, kind: type[TextTokenizer]) -> Any:
    """The class tokenizer_config.json names (T5Tokenizer, Qwen2Tokenizer), as the pipeline loads it."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}: transformers cannot load this {kind.description} tokenizer ({exc}). "
                         "Copy the folder again from the model's source.") from exc


def _tokenizer_json(folder: Path) -> dict | None:
    fast = folder / "tokenizer.json"
    return _read_json(fast) if fast.is_file() else None


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise ModelError(f"{file} is not a tokenizer file this tool can read ({exc}). "
                         "Copy the model's tokenizer folder again from its source.") from exc


def _files_found(folder: Path) -> str:
    if not folder.is_dir():
        return "the folder does not exist"
    return ", ".join(sorted(p.name for p in folder.iterdir())) or "the folder is empty"
