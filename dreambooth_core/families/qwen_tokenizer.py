"""A small Qwen2 tokenizer built offline, for tiny models and config-only folders.

The families that condition on a Qwen3 text encoder (FLUX.2 [klein], Z-Image) prompt it through
Qwen's chat template, with thinking turned off (`enable_thinking=False`). This tokenizer has what
those pipelines use: byte-level BPE (every string encodes, unknown words fall apart into bytes),
Qwen's special tokens with their roles (`<|im_end|>` ends a turn, `<|endoftext|>` pads), and a chat
template that writes `<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n` followed, when
thinking is off, by an empty `<think>\\n\\n</think>\\n\\n` block, as Qwen3's template does.

Its vocabulary is the 256 byte symbols plus whole-word merges for a few words (each word once
at the start of a text and once after a space, byte-level BPE's `Ġword`), then the special
tokens: a few hundred ids where Qwen has 151,936. Token ids only index the text encoder's
embedding, so a real-size encoder built from a config still has the real size.
"""

from __future__ import annotations

from pathlib import Path

from dreambooth_core.model.tiny import TINY_WORDS, byte_alphabet

# Qwen2 / Qwen3: <|endoftext|> pads, <|im_end|> ends a turn (the eos of the chat models).
PAD_TOKEN, TURN_START, TURN_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Plain added tokens in Qwen3 (not special: they stay in decoded text).
THINK_TOKENS = ("<think>", "</think>")
# byte-level BPE writes a leading space as this symbol (the stand-in for byte 0x20).
SPACE = byte_alphabet()[ord(" ")]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}")


def word_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """Byte-level BPE merges that make each word one token, both bare and after a space."""
    merges: list[tuple[str, str]] = []
    for word in words:
        # Letters join left to right; the space joins the whole word last (merges apply in rank
        # order, so a space merged first would leave the word's own merges unusable after it).
        pairs = [(word[:i], word[i]) for i in range(1, len(word))] + [(SPACE, word)]
        merges += [pair for pair in pairs if pair not in merges]
    return merges


def write_qwen_tokenizer(folder: Path, words: tuple[str, ...] = TINY_WORDS) -> Path:
    """Write the tokenizer (tokenizer.json, tokenizer_config.json, chat template) into `folder`."""
    from transformers import Qwen2Tokenizer

    merges = word_merges(words)
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
