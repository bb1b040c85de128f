"""Class words: one for every subject, or one per subject."""

import pytest

from dreambooth_core.captions.classes import class_prompt, class_word_for, parse_class_words
from dreambooth_core.config import DreamBoothConfig


def test_one_word_for_every_subject():
    words = parse_class_words("man")
    assert class_word_for("shrk", words) == class_word_for("ohwx", words) == "man"


def test_a_word_per_subject_with_a_default_for_the_rest():
    words = parse_class_words("Shrk=man, ohwx=dog,style")
    assert [class_word_for(t, words) for t in ("shrk", "OHWX", "zork")] == ["man", "dog", "style"]


def test_no_class_word():
    assert class_word_for("shrk", parse_class_words(None)) is None
    assert class_prompt(None) is None
    assert class_prompt("dog") == "photo of dog"


@pytest.mark.parametrize("spec", ["shrk=", "=dog", "man,,dog", "shrk=man,shrk=dog", "man,woman"])
def test_malformed_class_words_are_refused_by_the_config(spec):
    with pytest.raises(ValueError, match="class word entry"):
        DreamBoothConfig(session="s", class_word=spec)
