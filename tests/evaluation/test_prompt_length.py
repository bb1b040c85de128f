"""Prompts longer than the text encoder reads are refused, naming them and their length."""

import pytest

from dreambooth_core.captions.tokenizer import load_tokenizer
from dreambooth_core.errors import ConfigError
from dreambooth_core.evaluation.generations import require_prompt_lengths


def test_a_prompt_over_77_tokens_is_named_with_its_length(tiny_model_path):
    tokenizer = load_tokenizer(tiny_model_path)
    long = "a photo of a dog " + "very " * 80 + "far away"
    with pytest.raises(ConfigError) as error:
        require_prompt_lengths(["a photo of a dog", long], tokenizer)
    message = str(error.value)
    assert message.startswith("1 prompt(s) are longer than the text encoder reads (77 tokens")
    assert f"takes {tokenizer.length(long)}" in message and "'a photo of a dog very very" in message
    assert "shorten them" in message


def test_a_prompt_of_exactly_77_tokens_fits(tiny_model_path):
    tokenizer = load_tokenizer(tiny_model_path)
    prompt = "dog " * 75  # with the start and end markers: 77
    assert tokenizer.length(prompt) == 77
    require_prompt_lengths([prompt], tokenizer)
    with pytest.raises(ConfigError):
        require_prompt_lengths([prompt + "dog"], tokenizer)


def test_a_learnt_identifier_counts_as_one_token(tiny_model_path):
    """With textual inversion the identifier is one new token, not the pieces the base splits it into."""
    prompt = "zwxq " * 30 + "dog"
    base = load_tokenizer(tiny_model_path)
    assert base.length(prompt) > 77
    require_prompt_lengths([prompt], load_tokenizer(tiny_model_path), new_tokens=["zwxq"])
