"""Small tokenizers of each kind whose vocabularies the token tests choose: the same common words,
fillers up to the kind's common-word threshold, then rare words and pieces."""

import itertools
from pathlib import Path

from dreambooth_core.captions.analysis import COMMON_BYTE_LEVEL_MERGES, COMMON_MERGES, COMMON_UNIGRAM_PIECES
from dreambooth_core.model.tiny import byte_alphabet, word_merges

COMMON_WORDS = ["photo", "of", "the", "man", "dog", "do", "re", "mi"]
EARLY_PIECES = [("s", "h"), ("sh", "r")]
# Merged after COMMON_MERGES merges, as rare words are in CLIP ('ohwx' is rank ~47,500):
# two rare whole words, and pieces that make some pronounceable words 2 tokens long.
LATE_WORDS = ["ohwx", "sks"]
LATE_PIECES = [("z", "o"), ("k", "a"), ("b", "e"), ("r", "k</w>"), ("n", "d</w>")]


def filler_merges(count: int) -> list[tuple[str, str]]:
    """Merges of two characters that no word in the tests contains (no ASCII letters)."""
    symbols = [c for c in byte_alphabet() if not ("a" <= c.lower() <= "z")]
    return list(itertools.islice(itertools.product(symbols, symbols), count))


def small_merges() -> list[tuple[str, str]]:
    early = word_merges(COMMON_WORDS) + EARLY_PIECES
    return early + filler_merges(COMMON_MERGES - len(early)) + word_merges(LATE_WORDS) + LATE_PIECES


# The same words in a SentencePiece Unigram vocabulary (T5's kind): the common words as '▁word'
# pieces with the best scores, then COMMON_UNIGRAM_PIECES fillers no test word contains, then the
# rare words and pieces; single characters score worst, so words split into the longest pieces.
# "do", "re", "mi" are also pieces inside a word, as in T5.
UNIGRAM_INNER = ["do", "re", "mi", "di"]
UNIGRAM_RARE = ["▁sh", "rk", "▁zo", "▁ka", "▁be", "▁bu", "nd", "▁Dog"]
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def unigram_vocab() -> list[tuple[str, float]]:
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + word, -3.0 - index / 100) for index, word in enumerate(COMMON_WORDS)]
    vocab += [(chr(0x4E00 + index), -8.0) for index in range(COMMON_UNIGRAM_PIECES)]  # CJK: no test word
    vocab += [(piece, -12.0) for piece in UNIGRAM_INNER]
    vocab += [("▁" + word, -13.0) for word in LATE_WORDS] + [(piece, -14.0) for piece in UNIGRAM_RARE]
    return vocab + [(char, -20.0) for char in LETTERS]


def write_unigram_tokenizer(folder: Path, vocab: list[tuple[str, float]]) -> Path:
    from transformers import T5Tokenizer

    T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512).save_pretrained(folder)
    return folder


# And in a byte-level BPE (Qwen2's kind, 'Ġ' for the space before a word): the common words with
# their space, "do" "re" "mi" inside words, COMMON_BYTE_LEVEL_MERGES fillers, then the rare ones.
BYTE_LEVEL_INNER = [("d", "o"), ("r", "e"), ("m", "i")]
BYTE_LEVEL_RARE = [("Ġ", "s"), ("Ġs", "h"), ("r", "k"), ("Ġ", "z"), ("Ġz", "o"), ("Ġ", "k"), ("Ġk", "a"),
                   ("n", "d"), ("Ã", "©")]


def spaced_word_merges(words) -> list[tuple[str, str]]:
    """Byte-level merges that make ' word' (as 'Ġword') one token, joining letters left to right."""
    merges: list[tuple[str, str]] = []
    for word in words:
        head = "Ġ"
        for letter in word:
            if (head, letter) not in merges:
                merges.append((head, letter))
            head += letter
    return merges


def byte_level_merges() -> list[tuple[str, str]]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    early = spaced_word_merges(COMMON_WORDS) + BYTE_LEVEL_INNER
    symbols = [c for c in bytes_to_unicode().values() if not (c.isascii() and c.isalnum()) and c not in "ĠÃ©"]
    fillers = itertools.islice(itertools.product(symbols, symbols), COMMON_BYTE_LEVEL_MERGES - len(early))
    return early + list(fillers) + spaced_word_merges(LATE_WORDS + ["Dog"]) + BYTE_LEVEL_RARE


def write_byte_level_tokenizer(folder: Path, merges: list[tuple[str, str]]) -> Path:
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {char: index for index, char in enumerate(bytes_to_unicode().values())}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                   pad_token="<|endoftext|>", model_max_length=512).save_pretrained(folder)
    return folder
