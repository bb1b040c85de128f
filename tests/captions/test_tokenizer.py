"""Each kind of tokenizer folder is read as its kind: CLIP's BPE, byte-level BPE, SentencePiece Unigram."""

import json
import shutil

import pytest
from small_tokenizers import small_merges, write_unigram_tokenizer

from dreambooth_core.captions.tokenizer import (
    ByteLevelBpeTokenizer,
    ClipBpeTokenizer,
    UnigramTokenizer,
    load_second_tokenizer,
    load_tokenizer,
)
from dreambooth_core.errors import ModelError
from dreambooth_core.model.tiny import write_tiny_tokenizer


def test_a_saved_folder_of_each_kind_loads_as_that_kind(small_tokenizer, unigram_model, byte_level_model):
    assert isinstance(small_tokenizer, ClipBpeTokenizer)
    assert isinstance(load_tokenizer(unigram_model, "tokenizer_2"), UnigramTokenizer)
    assert isinstance(load_tokenizer(byte_level_model), ByteLevelBpeTokenizer)


def test_flux_like_model_has_clip_then_t5(unigram_model, tmp_path):
    model = tmp_path / "model"
    write_tiny_tokenizer(model / "tokenizer", small_merges())
    shutil.copytree(unigram_model / "tokenizer_2", model / "tokenizer_2")
    assert isinstance(load_tokenizer(model), ClipBpeTokenizer)
    assert isinstance(load_second_tokenizer(model), UnigramTokenizer)


def test_byte_level_reads_vocab_and_merges_without_tokenizer_json(byte_level_model, byte_level_tokenizer,
                                                                  tmp_path):
    """Qwen's hub repos also hold vocab.json + merges.txt; a folder with only those is byte-level BPE
    (no piece ends in '</w>'), with the same ranks and pieces."""
    folder = tmp_path / "tokenizer"
    shutil.copytree(byte_level_model / "tokenizer", folder)
    model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    merges = ["#version: 0.2", *(" ".join(pair) for pair in model["merges"])]
    (folder / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer.json").unlink()
    tokenizer = load_tokenizer(tmp_path)
    assert isinstance(tokenizer, ByteLevelBpeTokenizer) and tokenizer.ranks == byte_level_tokenizer.ranks
    assert tokenizer.pieces("shrk") == byte_level_tokenizer.pieces("shrk") == ["▁sh", "rk"]


def test_pieces_show_word_starts_alike(unigram_tokenizer, byte_level_tokenizer):
    """T5 shows SentencePiece's own '▁'; byte-level BPE's 'Ġ' (the space byte) is shown as '▁' too."""
    assert unigram_tokenizer.pieces("shrk") == ["▁sh", "rk"]
    assert byte_level_tokenizer.tokenizer.tokenize(" shrk") == ["Ġsh", "rk"]
    assert byte_level_tokenizer.pieces("shrk") == ["▁sh", "rk"]


def test_byte_level_pieces_are_decoded_text(byte_level_tokenizer):
    """'é' is one piece (two bytes merged) and shows as 'é', not as its bytes' stand-ins 'Ã©'; a byte
    that is only half of a character shows as an escape."""
    assert byte_level_tokenizer.tokenizer.tokenize(" café")[-1] == "Ã©"
    assert byte_level_tokenizer.pieces("café") == ["▁", "c", "a", "f", "é"]
    assert byte_level_tokenizer.pieces("über") == ["▁", "\\xc3", "\\xbc", "b", "e", "r"]


def test_an_added_token_outside_the_byte_alphabet_is_shown_as_added(byte_level_model):
    tokenizer = load_tokenizer(byte_level_model)
    tokenizer.tokenizer.add_tokens(["<｜x｜>"])  # as textual inversion adds its word
    assert tokenizer.pieces("<｜x｜>") == ["▁", "<｜x｜>"]


def test_token_counts_and_context_length(unigram_model, unigram_tokenizer, byte_level_tokenizer):
    assert unigram_tokenizer.length("shrk") == 3  # '▁sh' 'rk' and T5's end marker </s>
    assert byte_level_tokenizer.length(" shrk") == 2  # Qwen adds no markers
    assert unigram_tokenizer.context_length == byte_level_tokenizer.context_length == 512
    schnell = load_tokenizer(unigram_model, "tokenizer_2", context_length=256)  # FLUX.1 [schnell]'s T5
    assert schnell.context_length == 256


def test_unigram_ranks_follow_the_scores_not_the_file_order(tmp_path):
    write_unigram_tokenizer(tmp_path / "tokenizer", [
        ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁rare", -9.0), ("▁dog", -3.0), ("▁", -2.0)])
    ranks = load_tokenizer(tmp_path).ranks
    assert ranks["▁"] < ranks["▁dog"] < ranks["▁rare"]


# --- folders this tool cannot read ------------------------------------------------------

def test_bpe_that_is_neither_clip_nor_byte_level_is_named(byte_level_model, tmp_path):
    """A SentencePiece-style BPE (Llama's kind: '▁' pieces, Metaspace) says what it found."""
    folder = tmp_path / "tokenizer"
    shutil.copytree(byte_level_model / "tokenizer", folder)
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                             "split": False}
    (folder / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelError, match=r"tokenizer\.json holds a BPE tokenizer that is neither CLIP's "
                                         r"\(its end_of_word_suffix is ''.*Metaspace"):
        load_tokenizer(tmp_path)


def test_sentencepiece_model_without_tokenizer_json_is_named(tmp_path):
    (tmp_path / "tokenizer_2").mkdir()
    (tmp_path / "tokenizer_2" / "spiece.model").write_bytes(b"\x0a\x05")
    (tmp_path / "tokenizer_2" / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelError, match=r"tokenizer_2: a SentencePiece model \(spiece.model\) without "
                                         r"tokenizer.json \(found: spiece.model, tokenizer_config.json\)"):
        load_tokenizer(tmp_path, "tokenizer_2")


def test_a_missing_tokenizer_folder_is_named(tmp_path):
    with pytest.raises(ModelError, match=r"tokenizer: neither merges.txt nor tokenizer.json \(found: the "
                                         r"folder does not exist\).*SentencePiece Unigram"):
        load_tokenizer(tmp_path)


def test_a_damaged_tokenizer_json_is_named(tmp_path):
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer.json").write_text('{"model": {"type": "BPE", ')
    with pytest.raises(ModelError, match=r"tokenizer\.json is not a tokenizer file this tool can read"):
        load_tokenizer(tmp_path)
