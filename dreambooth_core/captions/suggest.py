"""Proposing rare identifiers: pronounceable, short in tokens, unknown to the model."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from dreambooth_core.captions.analysis import KNOWN_BAD, analyse_token
from dreambooth_core.captions.tokenizer import TextTokenizer

_ONSETS = ["b", "d", "g", "k", "m", "n", "p", "t", "v", "z", "br", "dr", "gr", "kr", "sk", "sh",
           "tr", "vr", "zh", "kw"]
_VOWELS = ["a", "e", "i", "o", "u", "y"]
_CODAS = ["rk", "x", "sk", "lv", "zk", "nd", "kt", "rx", "vk", "lx", "mb"]


def candidate_words(seed: str) -> list[str]:
    """Every onset-vowel-coda word ('zorv' shape), in an order drawn from `seed`."""
    words = ["".join(parts) for parts in itertools.product(_ONSETS, _VOWELS, _CODAS)]
    random.Random(seed).shuffle(words)
    return words


def suggest_tokens(tokenizers: TextTokenizer | Sequence[TextTokenizer], count: int = 5, seed: str = "",
                   avoid: set[str] = frozenset()) -> list[str]:
    """Up to `count` words whose verdict is good with each of the model's `tokenizers` (SDXL's two,
    FLUX.1's CLIP and T5): 1-2 tokens, no common word, not known-bad."""
    judges = [tokenizers] if isinstance(tokenizers, TextTokenizer) else list(tokenizers)
    taken = {w.lower() for w in avoid} | set(KNOWN_BAD)
    found = []
    for word in candidate_words(seed):
        if word not in taken and all(analyse_token(word, judge).verdict == "good" for judge in judges):
            found.append(word)
            if len(found) == count:
                break
    return found
