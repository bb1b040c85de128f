"""A small T5 tokenizer built offline: the Unigram model T5 uses, with a vocabulary of a few
whole words, a few word-start pieces and single characters, so that every ASCII word
tokenizes (a known word as one token, any other as pieces and letters) and token ids stay
small. T5 fixes ids 0, 1, 2 as pad, end-of-text and unknown.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path

SPACE = "▁"  # sentencepiece's mark for "a word starts here"
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
# Unigram picks the split with the highest summed score: a whole word beats its pieces,
# a word-start piece beats letters.
_WORD_SCORE, _PIECE_SCORE, _START_CHAR_SCORE, _CHAR_SCORE, _SPACE_SCORE = -3.0, -5.0, -8.0, -9.0, -10.0
_CHARACTERS = string.ascii_letters + string.digits + string.punctuation


def tiny_t5_vocabulary(words: Sequence[str], pieces: Sequence[str] = ()) -> list[tuple[str, float]]:
    """(piece, score) pairs in id order: the special tokens, then words, word-start pieces, characters."""
    entries = [(token, 0.0) for token in SPECIAL_TOKENS] + [(SPACE, _SPACE_SCORE)]
    entries += [(SPACE + word, _WORD_SCORE) for word in words]
    entries += [(SPACE + piece, _PIECE_SCORE) for piece in pieces]
    entries += [(SPACE + char, _START_CHAR_SCORE) for char in _CHARACTERS]
    entries += [(char, _CHAR_SCORE) for char in _CHARACTERS]
    seen: set[str] = set()
    return [(p, s) for p, s in entries if not (p in seen or seen.add(p))]


def write_tiny_t5_tokenizer(folder: Path, words: Sequence[str], model_max_length: int,
                            pieces: Sequence[str] = ()) -> None:
    """Save a T5 tokenizer (tokenizer.json + tokenizer_config.json) that knows `words` whole."""
    from transformers import T5Tokenizer

    tokenizer = T5Tokenizer(vocab=tiny_t5_vocabulary(words, pieces), extra_ids=0,
                            model_max_length=model_max_length)
    Path(folder).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
