"""How good an identifier a word is for the base model's text encoder, and proposing good ones.

A DreamBooth identifier should be a word the model has no meaning for yet:
few tokens, none of them a word it already knows. Everything here is judged
with the model's own tokenizer (CLIP's BPE, byte-level BPE or SentencePiece
Unigram: see tokenizer.py), so the verdicts hold for that model.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from dreambooth_core.captions.tokenizer import TextTokenizer, TokenizerKind

# A piece is a "common word" when the same letters, as a whole word, have a rank
# (tokenizer.py) under the threshold of the tokenizer's kind.
#
# CLIP's BPE: one of the first COMMON_MERGES merges. BPE merges in order of
# frequency, and in CLIP's 48,894 merges (learnt from web captions) the first
# 10,000 whole-word tokens are everyday words ('do', 'coffee', 'weekend',
# 'laptop') the text encoder has a strong meaning for; later ones are mostly
# names, rare words and fragments. Rare identifiers people use ('ohwx', 'sks')
# are themselves late merges (rank ~47,500). Two letters are the shortest piece
# that counts: single letters are the byte alphabet, not merges. In a small
# tokenizer every whole-word merge is within the threshold, so each one counts
# as common.
COMMON_MERGES = 10_000
# Byte-level BPE (Qwen2's 151,387 merges, which Qwen3 shares: FLUX.2 [klein]): the
# same everyday words as CLIP's threshold, not the same share of the merges. CLIP's
# first 10,000 merges make 6,202 whole lowercase words; Qwen2's merges have made as
# many ('Ġ' + letters) by rank 21,600, and 'laptop', CLIP's 9,952nd merge, is
# Qwen2's 20,382nd (the words at CLIP's 9,000-11,000 sit at a median Qwen2 rank of
# 23,600). The same share (20.5%, rank ~31,000) would count more words as known,
# since most of Qwen2's merges are code, whitespace runs and other scripts.
# (Measured by hand on Qwen2.5's merges.txt, the same merges; no test has it offline.)
COMMON_BYTE_LEVEL_MERGES = 21_600
# SentencePiece Unigram (T5's 32,000 pieces: FLUX.1): a '▁word' piece among the
# COMMON_UNIGRAM_PIECES best-scored pieces. That is CLIP's share of its vocabulary
# (10,000 of 48,894 merges, 20.5%; of 32,000 pieces, 6,545), and it is where T5's
# English words are the ones at CLIP's threshold: the whole words near T5's piece
# 6,200 ('vegetables', 'yoga', 'factory', 'lawyer') have a median CLIP merge rank of
# 10,544. (Checked by hand against T5's tokenizer.json, which no test has offline.)
COMMON_UNIGRAM_PIECES = 6_500
COMMON_RANKS: dict[TokenizerKind, int] = {
    "clip-bpe": COMMON_MERGES, "byte-level-bpe": COMMON_BYTE_LEVEL_MERGES,
    "unigram": COMMON_UNIGRAM_PIECES}
MIN_WORD_LETTERS = 2
MAX_GOOD_TOKENS = 2
MIN_LETTERS = 3

# Rare-looking words the base models already draw something for.
KNOWN_BAD = {
    "sks": "SKS is a rifle brand: Stable Diffusion draws rifles for it",
}

Verdict = Literal["good", "risky", "bad"]


class TokenAnalysis(BaseModel):
    model_config = ConfigDict(frozen=True)
    word: str
    pieces: list[str]
    token_count: int
    common_words: list[str]
    has_digits: bool
    verdict: Verdict
    reason: str


def is_common_word(text: str, tokenizer: TextTokenizer) -> bool:
    """Whether `text`, as a whole word, is one the model knows well (see COMMON_RANKS)."""
    rank = tokenizer.word_rank(text)
    return len(text) >= MIN_WORD_LETTERS and rank is not None and rank < COMMON_RANKS[tokenizer.kind]


def analyse_token(word: str, tokenizer: TextTokenizer) -> TokenAnalysis:
    pieces = tokenizer.pieces(word)
    texts = [tokenizer.piece_text(p) for i, p in enumerate(pieces) if not tokenizer.is_prefix(pieces, i)]
    common = [text for text in texts if is_common_word(text, tokenizer)]
    digits = any(c.isdigit() for c in word)
    verdict, reason = _verdict(word, len(pieces), common, digits)
    return TokenAnalysis(word=word, pieces=pieces, token_count=len(pieces), common_words=common,
                         has_digits=digits, verdict=verdict, reason=reason)


_SEVERITY = {"good": 0, "risky": 1, "bad": 2}


def worst(analyses: list[TokenAnalysis]) -> TokenAnalysis:
    """The analysis with the worst verdict (the first of equals)."""
    return max(analyses, key=lambda a: _SEVERITY[a.verdict])


def _verdict(word: str, count: int, common: list[str], digits: bool) -> tuple[Verdict, str]:
    if word.lower() in KNOWN_BAD:
        return "bad", f"{KNOWN_BAD[word.lower()]}."
    if common:
        words = ", ".join(f"'{w}'" for w in common)
        return "bad", f"the model already knows {words}: it would mix that meaning into the subject."
    if count == 0:
        return "bad", "it has no tokens at all."
    risks = []
    if len(word) < MIN_LETTERS:
        risks.append(f"it has fewer than {MIN_LETTERS} letters, like an abbreviation the model may "
                     "know")
    if count > MAX_GOOD_TOKENS:
        risks.append(f"it takes {count} tokens (1 or 2 are learnt faster and stay distinct)")
    if digits:
        risks.append("it contains digits, which the tokenizer splits into tokens of their own")
    if risks:
        return "risky", "; ".join(risks) + "."
    return "good", f"{count} token{'s' if count > 1 else ''}, none of them a word the model knows."


# Proposing rare identifiers: pronounceable, short in tokens, unknown to the model.

_ONSETS = ["b", "d", "g", "k", "m", "n", "p", "t", "v", "z", "br", "dr", "gr", "kr", "sk", "sh",
           "tr", "vr", "zh", "kw"]
_VOWELS = ["a", "e", "i", "o", "u", "y"]
_CODAS = ["rk", "x", "sk", "lv", "zk", "nd", "kt", "rx", "vk", "lx", "mb"]


def candidate_words(seed: str) -> list[str]:
    """Every onset-vowel-coda word ('zorv' shape), in an order drawn from `seed`."""
    words = ["".join(parts) for parts in itertools.product(_ONSETS, _VOWELS, _CODAS)]
    random.Random(seed).shuffle(words)
    return words


def suggest_tokens(tokenizers: TextTokenizer | Sequence[TextTokenizer], count: int = 5,
                   seed: str = "",
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
