"""Token verdicts with a tokenizer whose vocabulary we know, and with CLIP's real one."""

import pytest

from dreambooth_core.captions.analysis import (
    COMMON_BYTE_LEVEL_MERGES,
    COMMON_MERGES,
    COMMON_RANKS,
    COMMON_UNIGRAM_PIECES,
    KNOWN_BAD,
    analyse_token,
    is_common_word,
    suggest_tokens,
)


@pytest.mark.parametrize("word, pieces, common, verdict", [
    ("shrk", ["shr", "k</w>"], [], "good"),
    ("ohwx", ["ohwx</w>"], [], "good"),
    ("budidoremi", ["b", "u", "d", "i", "do", "r", "e", "mi</w>"], ["do", "mi"], "bad"),
    ("dog", ["dog</w>"], ["dog"], "bad"),
    ("Photo", ["photo</w>"], ["photo"], "bad"),
    ("sks", ["sks</w>"], [], "bad"),
    ("zwq", ["z", "w", "q</w>"], [], "risky"),
    ("shr2", ["sh", "r</w>", "2</w>"], [], "risky"),  # digits are split off the letters
    ("r2d2", ["r</w>", "2</w>", "d</w>", "2</w>"], [], "risky"),
])
def test_splits_and_verdicts(small_tokenizer, word, pieces, common, verdict):
    analysis = analyse_token(word, small_tokenizer)
    assert (analysis.pieces, analysis.common_words, analysis.verdict) == (pieces, common, verdict)
    assert analysis.token_count == len(pieces)
    assert analysis.has_digits == any(c.isdigit() for c in word)


def test_reasons_say_why(small_tokenizer):
    assert analyse_token("budidoremi", small_tokenizer).reason == (
        "the model already knows 'do', 'mi': it would mix that meaning into the subject.")
    assert "rifle" in analyse_token("sks", small_tokenizer).reason
    assert analyse_token("zwq", small_tokenizer).reason == (
        "it takes 3 tokens (1 or 2 are learnt faster and stay distinct).")
    assert "digits" in analyse_token("shr2", small_tokenizer).reason
    assert analyse_token("shrk", small_tokenizer).reason == "2 tokens, none of them a word the model knows."


def test_only_early_whole_word_merges_are_common(small_tokenizer):
    assert is_common_word("dog", small_tokenizer)
    assert not is_common_word("ohwx", small_tokenizer)  # a whole-word token, but a late merge
    assert not is_common_word("shr", small_tokenizer)  # a merge, but never a whole word
    assert small_tokenizer.ranks["ohwx</w>"] >= COMMON_MERGES


def test_suggestions_are_good_and_avoid_what_they_are_told(small_tokenizer):
    suggestions = suggest_tokens(small_tokenizer, 5, seed="budidoremi", avoid={"shrk"})
    assert len(suggestions) == 5 and len(set(suggestions)) == 5
    for word in suggestions:
        assert analyse_token(word, small_tokenizer).verdict == "good"
        assert word not in KNOWN_BAD and word != "shrk"
    assert suggestions[:3] == suggest_tokens(small_tokenizer, 3, seed="budidoremi", avoid={"shrk"})


# CLIP's own BPE (SD 1.x's tokenizer; SD 2.x's OpenCLIP uses the same merges).

def test_clip_sees_common_words_in_budidoremi(clip_tokenizer):
    analysis = analyse_token("budidoremi", clip_tokenizer)
    assert analysis.pieces == ["bu", "di", "do", "remi</w>"]
    assert "do" in analysis.common_words and analysis.verdict == "bad"


def test_clip_flags_sks_and_passes_the_rare_identifiers_people_use(clip_tokenizer):
    assert analyse_token("sks", clip_tokenizer).verdict == "bad"
    for word in ("ohwx", "shrk"):
        assert analyse_token(word, clip_tokenizer).verdict == "good", word
    assert analyse_token("woman", clip_tokenizer).common_words == ["woman"]


def test_clip_suggestions_are_rare(clip_tokenizer):
    suggestions = suggest_tokens(clip_tokenizer, 5, seed="sks")
    assert len(suggestions) == 5
    for word in suggestions:
        analysis = analyse_token(word, clip_tokenizer)
        assert analysis.token_count <= 2 and not analysis.common_words and not analysis.has_digits
        assert word not in KNOWN_BAD
        whole = clip_tokenizer.ranks.get(word + "</w>")
        assert whole is None or whole >= COMMON_MERGES  # not a word CLIP learnt early


# The other kinds: T5's SentencePiece Unigram (FLUX.1) and Qwen's byte-level BPE (FLUX.2 [klein]),
# small ones with the same common words (small_tokenizers.py).

@pytest.mark.parametrize("word, pieces, common, verdict", [
    ("budidoremi", ["▁bu", "di", "do", "re", "mi"], ["do", "re", "mi"], "bad"),
    ("shrk", ["▁sh", "rk"], [], "good"),
    ("ohwx", ["▁ohwx"], [], "good"),
    ("dog", ["▁dog"], ["dog"], "bad"),
    ("Dog", ["▁Dog"], ["Dog"], "bad"),  # T5 keeps case; '▁Dog' is a rare piece but 'dog' a common word
    ("sks", ["▁sks"], [], "bad"),
    ("zwq", ["▁", "z", "w", "q"], [], "risky"),
    ("r2d2", ["▁", "r", "2", "d", "2"], [], "risky"),
])
def test_unigram_splits_and_verdicts(unigram_tokenizer, word, pieces, common, verdict):
    analysis = analyse_token(word, unigram_tokenizer)
    assert (analysis.pieces, analysis.common_words, analysis.verdict) == (pieces, common, verdict)


@pytest.mark.parametrize("word, pieces, common, verdict", [
    ("budidoremi", ["▁", "b", "u", "d", "i", "do", "re", "mi"], ["do", "re", "mi"], "bad"),
    ("shrk", ["▁sh", "rk"], [], "good"),
    ("ohwx", ["▁ohwx"], [], "good"),
    ("Dog", ["▁Dog"], ["Dog"], "bad"),
    ("sks", ["▁sks"], [], "bad"),
    ("zwq", ["▁z", "w", "q"], [], "risky"),
    ("r2d2", ["▁r", "2", "d", "2"], [], "risky"),  # Qwen splits every digit off
])
def test_byte_level_splits_and_verdicts(byte_level_tokenizer, word, pieces, common, verdict):
    analysis = analyse_token(word, byte_level_tokenizer)
    assert (analysis.pieces, analysis.common_words, analysis.verdict) == (pieces, common, verdict)


def test_each_kind_has_its_own_common_word_threshold(unigram_tokenizer, byte_level_tokenizer):
    """A whole word learnt just after the kind's threshold is not common; 'dog', learnt early, is."""
    for tokenizer, whole_word in ((unigram_tokenizer, "▁ohwx"), (byte_level_tokenizer, "Ġohwx")):
        assert 0 <= tokenizer.ranks[whole_word] - COMMON_RANKS[tokenizer.kind] < 20
        assert not is_common_word("ohwx", tokenizer) and is_common_word("dog", tokenizer)
    assert not is_common_word("sh", unigram_tokenizer)  # '▁sh' is a piece, but a rare one
    assert (COMMON_RANKS["unigram"], COMMON_RANKS["byte-level-bpe"]) == (COMMON_UNIGRAM_PIECES,
                                                                         COMMON_BYTE_LEVEL_MERGES)


def test_suggestions_suit_every_tokenizer_of_a_model(small_tokenizer, unigram_tokenizer,
                                                     byte_level_tokenizer):
    judges = [small_tokenizer, unigram_tokenizer, byte_level_tokenizer]
    suggestions = suggest_tokens(judges, 3, seed="budidoremi")
    assert len(suggestions) == 3
    for word in suggestions:
        assert [analyse_token(word, judge).verdict for judge in judges] == ["good"] * 3
    assert suggestions == suggest_tokens(judges[::-1], 3, seed="budidoremi")  # in any order
    # Words CLIP alone would have proposed first, left out because another kind judges them otherwise.
    only_clip = suggest_tokens(small_tokenizer, 20, seed="budidoremi")
    passed_over = only_clip[:only_clip.index(suggestions[-1])]
    passed_over = [word for word in passed_over if word not in suggestions]
    assert passed_over
    for word in passed_over:
        assert any(analyse_token(word, judge).verdict != "good" for judge in judges[1:])


def test_a_word_start_piece_that_only_begins_the_word_is_no_known_word(tmp_path):
    """T5's vocabulary holds '▁shr' for 'shrimp' and 'shrug': 'shrk' starting with it is no known word,
    while a whole word among its pieces is."""
    from dreambooth_core.captions.tokenizer import load_tokenizer
    from dreambooth_core.model.tiny import write_tiny_t5_tokenizer

    write_tiny_t5_tokenizer(tmp_path / "tokenizer", ["photo", "dog"], 512, pieces=["shr"])
    t5 = load_tokenizer(tmp_path)
    shrk = analyse_token("shrk", t5)
    assert shrk.pieces == ["▁shr", "k"] and shrk.common_words == [] and shrk.verdict == "good"
    assert analyse_token("shr", t5).common_words == ["shr"]  # alone, the piece is the whole word
    assert analyse_token("dog", t5).verdict == "bad"
