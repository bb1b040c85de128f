"""Tiny tokenizers, built locally: what the tiny models of every family tokenize with (CLIP's BPE,
T5's Unigram, Qwen's byte-level BPE), and the configs of tiny CLIP-like judges.

The CLIP vocabulary is CLIP's byte alphabet plus merges that make a few everyday words whole-word
tokens, so that token verdicts on a tiny model mean what they mean on a real one.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from pathlib import Path

# Words the tiny text encoder "knows" (each is one whole-word token), so that
# token verdicts on the tiny model mean what they mean on a real one; and the
# pieces of the demo identifier, which splits into 'shr' + 'k', and a few more
# word-start pieces so that --suggest finds rare 2-token words ("zor" + "x").
TINY_WORDS = ("photo", "of", "a", "the", "man", "woman", "person", "dog", "cat", "style", "do")
TINY_PIECES = (("s", "h"), ("sh", "r"), ("z", "o"), ("zo", "r"), ("k", "a"), ("ka", "r"))


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins CLIP's BPE uses for raw bytes, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def word_merges(words) -> list[tuple[str, str]]:
    """BPE merges that make each word one whole-word token, joining letters left to right."""
    merges: list[tuple[str, str]] = []
    for word in words:
        head = word[0]
        for index, letter in enumerate(word[1:], start=1):
            pair = (head, letter + ("</w>" if index == len(word) - 1 else ""))
            if pair not in merges:
                merges.append(pair)
            head += letter
    return merges


def tiny_merges() -> list[tuple[str, str]]:
    return word_merges(TINY_WORDS) + [p for p in TINY_PIECES if p not in word_merges(TINY_WORDS)]


def write_tiny_tokenizer(folder: Path, merges: list[tuple[str, str]] = (),
                         pad_token: str = "<|endoftext|>") -> None:
    """A CLIP tokenizer whose vocabulary is the byte alphabet plus the given merges.

    SD 1.x pads with the end-of-text token, SD 2.x with "!".
    """
    alphabet = byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(pair) for pair in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)},
                                                  ensure_ascii=False))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": pad_token}))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": pad_token, "do_lower_case": True}))


def tiny_clip_configs(tokenizer, width: int, image_size: int) -> dict[str, dict]:
    """text_config and vision_config of a tiny random CLIP-like judge or segmenter (CLIP, CLIPSeg)."""
    text = dict(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=64,
                num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(image_size=image_size, patch_size=8, hidden_size=width, intermediate_size=64,
                  num_attention_heads=4, num_hidden_layers=2)
    return {"text_config": text, "vision_config": vision}


# A small T5 tokenizer built offline: the Unigram model T5 uses, with a vocabulary of a few
# whole words, a few word-start pieces and single characters, so that every ASCII word
# tokenizes (a known word as one token, any other as pieces and letters) and token ids stay
# small. T5 fixes ids 0, 1, 2 as pad, end-of-text and unknown.

T5_WORD_START = "▁"  # sentencepiece's mark for "a word starts here"
T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
# Unigram picks the split with the highest summed score: a whole word beats its pieces,
# a word-start piece beats letters.
_WORD_SCORE, _PIECE_SCORE, _START_CHAR_SCORE, _CHAR_SCORE, _SPACE_SCORE = -3.0, -5.0, -8.0, -9.0, -10.0
_CHARACTERS = string.ascii_letters + string.digits + string.punctuation


def tiny_t5_vocabulary(words: Sequence[str], pieces: Sequence[str] = ()) -> list[tuple[str, float]]:
    """(piece, score) pairs in id order: the special tokens, then words, word-start pieces, characters."""
    entries = [(token, 0.0) for token in T5_SPECIAL_TOKENS] + [(T5_WORD_START, _SPACE_SCORE)]
    entries += [(T5_WORD_START + word, _WORD_SCORE) for word in words]
    entries += [(T5_WORD_START + piece, _PIECE_SCORE) for piece in pieces]
    entries += [(T5_WORD_START + char, _START_CHAR_SCORE) for char in _CHARACTERS]
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


# A small Qwen2 tokenizer built offline, for tiny models and config-only folders.
#
# The families that condition on a Qwen3 text encoder (FLUX.2 [klein], Z-Image) prompt it through
# Qwen's chat template, with thinking turned off (`enable_thinking=False`). This tokenizer has what
# those pipelines use: byte-level BPE (every string encodes, unknown words fall apart into bytes),
# Qwen's special tokens with their roles (`<|im_end|>` ends a turn, `<|endoftext|>` pads), and a chat
# template that writes `<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n` followed, when
# thinking is off, by an empty `<think>\n\n</think>\n\n` block, as Qwen3's template does.
#
# Its vocabulary is the 256 byte symbols plus whole-word merges for a few words (each word once
# at the start of a text and once after a space, byte-level BPE's `Ġword`), then the special
# tokens: a few hundred ids where Qwen has 151,936. Token ids only index the text encoder's
# embedding, so a real-size encoder built from a config still has the real size.

# Qwen2 / Qwen3: <|endoftext|> pads, <|im_end|> ends a turn (the eos of the chat models).
PAD_TOKEN, TURN_START, TURN_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Plain added tokens in Qwen3 (not special: they stay in decoded text).
THINK_TOKENS = ("<think>", "</think>")
# byte-level BPE writes a leading space as this symbol (the stand-in for byte 0x20).
BYTE_LEVEL_SPACE = byte_alphabet()[ord(" ")]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] "
    "}}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% if "
    "enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif "
    "%}{% endif %}")


def spaced_word_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """Byte-level BPE merges that make each word one token, both bare and after a space."""
    merges: list[tuple[str, str]] = []
    for word in words:
        # Letters join left to right; the space joins the whole word last (merges apply in rank
        # order, so a space merged first would leave the word's own merges unusable after it).
        pairs = [(word[:i], word[i]) for i in range(1, len(word))] + [(BYTE_LEVEL_SPACE, word)]
        merges += [pair for pair in pairs if pair not in merges]
    return merges


def write_qwen_tokenizer(folder: Path, words: tuple[str, ...] = TINY_WORDS) -> Path:
    """Write the tokenizer (tokenizer.json, tokenizer_config.json, chat template) into `folder`."""
    from transformers import Qwen2Tokenizer

    merges = spaced_word_merges(words)
    vocab = {symbol: i for i, symbol in enumerate(byte_alphabet() + ["".join(pair) for pair in merges])}
    # Qwen's order of the added tokens: <|endoftext|> (pad; the constructor's default), <|im_start|>,
    # <|im_end|> (eos), then <think> and </think> (plain tokens).
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, model_max_length=131072)
    tokenizer.add_special_tokens({"additional_special_tokens": [TURN_START, TURN_END]})
    tokenizer.add_special_tokens({"eos_token": TURN_END, "pad_token": PAD_TOKEN})
    tokenizer.add_tokens(list(THINK_TOKENS))
    tokenizer.chat_template = CHAT_TEMPLATE
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    return folder
