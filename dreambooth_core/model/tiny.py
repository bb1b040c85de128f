"""Tiny CLIP BPE tokenizers, built locally: what the tiny models of every family tokenize with.

The vocabulary is CLIP's byte alphabet plus merges that make a few everyday words whole-word
tokens, so that token verdicts on a tiny model mean what they mean on a real one.
"""

from __future__ import annotations

import json
from pathlib import Path

# Words the tiny text encoder "knows" (each is one whole-word token), so that
# token verdicts on the tiny model mean what they mean on a real one; and the
# pieces of the demo identifier, which splits into 'shr' + 'k', and a few more
# word-start pieces so that --suggest finds rare 2-token words ("zor" + "x").
TINY_WORDS = ("photo", "of", "a", "the", "man", "woman", "person", "dog", "cat", "style", "do")
TINY_PIECES = (("s", "h"), ("sh", "r"), ("z", "o"), ("zo", "r"), ("k", "a"), ("ka", "r"))


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins CLIP's BPE uses for raw bytes, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
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


def write_tiny_tokenizer(folder: Path, merges: list[tuple[str, str]] = (), pad_token: str = "<|endoftext|>") -> None:
    """A CLIP tokenizer whose vocabulary is the byte alphabet plus the given merges.

    SD 1.x pads with the end-of-text token, SD 2.x with "!".
    """
    alphabet = byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(pair) for pair in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
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
    text = dict(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=64, num_attention_heads=4,
                num_hidden_layers=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(image_size=image_size, patch_size=8, hidden_size=width, intermediate_size=64,
                  num_attention_heads=4, num_hidden_layers=2)
    return {"text_config": text, "vision_config": vision}
