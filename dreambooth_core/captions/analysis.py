"""How good an identifier a word is for the base model's text encoder.

A DreamBooth identifier should be a word the model has no meaning for yet:
few tokens, none of them a word it already knows. Everything here is judged
with the model's own BPE, so the verdicts hold for that model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from dreambooth_core.captions.tokenizer import TextTokenizer

END_OF_WORD = "</w>"

# A piece is a "common word" when the same letters, as a whole word, come from
# one of the first COMMON_MERGES merges. BPE merges in order of frequency, and
# in CLIP's 48,894 merges (learnt from web captions) the first 10,000 whole-word
# tokens are everyday words ('do', 'coffee', 'weekend', 'laptop') the text
# encoder has a strong meaning for; later ones are mostly names, rare words and
# fragments. Rare identifiers people use ('ohwx', 'sks') are themselves late
# merges (rank ~47,500). Two letters are the shortest piece that counts: single
# letters are the byte alphabet, not merges. In a small tokenizer every
# whole-word merge is within the threshold, so each one counts as common.
COMMON_MERGES = 10_000
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


def piece_text(piece: str) -> str:
    return piece.removesuffix(END_OF_WORD)


def is_common_word(text: str, tokenizer: TextTokenizer) -> bool:
    rank = tokenizer.ranks.get(text.lower() + END_OF_WORD)
    return len(text) >= MIN_WORD_LETTERS and rank is not None and rank < COMMON_MERGES


def analyse_token(word: str, tokenizer: TextTokenizer) -> TokenAnalysis:
    pieces = tokenizer.pieces(word)
    common = [piece_text(p) for p in pieces if is_common_word(piece_text(p), tokenizer)]
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
        risks.append(f"it has fewer than {MIN_LETTERS} letters, like an abbreviation the model may know")
    if count > MAX_GOOD_TOKENS:
        risks.append(f"it takes {count} tokens (1 or 2 are learnt faster and stay distinct)")
    if digits:
        risks.append("it contains digits, which the tokenizer splits into tokens of their own")
    if risks:
        return "risky", "; ".join(risks) + "."
    return "good", f"{count} token{'s' if count > 1 else ''}, none of them a word the model knows."
