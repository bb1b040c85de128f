"""The identifier comes from file names the way users name their photos; class words: one for every
subject, or one per subject."""

import pytest

from dreambooth_core.captions.tokens import (
    caption,
    caption_from_text,
    class_prompt,
    class_word_for,
    parse_class_words,
    token_from_filename,
    token_of_photo,
)
from dreambooth_core.config import DreamBoothConfig
from dreambooth_core.errors import DatasetError


@pytest.mark.parametrize("name, token", [
    ("shrk (1).jpg", "shrk"), ("shrk (12).JPG", "shrk"), ("shrk(2).png", "shrk"),
    ("shrk_3.jpg", "shrk"), ("shrk-4.webp", "shrk"), ("shrk 5.jpg", "shrk"),
    ("shrk.jpg", "shrk"), ("r2d2.jpg", "r2d2"), ("ohwx man (3).jpg", "ohwx man"),
])
def test_token_from_filename(name, token):
    assert token_from_filename(name) == token


def test_a_name_without_identifier_is_refused():
    with pytest.raises(DatasetError, match=r"\(1\)\.jpg"):
        token_from_filename("(1).jpg")


def test_caption_template():
    assert caption("photo of {token}", "shrk") == "photo of shrk"
    assert caption("{token} on the moon", "ohwx") == "ohwx on the moon"


@pytest.mark.parametrize("source, token, where", [
    ("photos/shrk (1).jpg", "shrk", "shrk (1).jpg"),
    ("photos/r2d2 (3).jpg", "r2d2", "r2d2 (3).jpg"),
    ("photos/ohwx/IMG_0001.jpg", "ohwx", "ohwx/"),
])
def test_token_of_a_photo_comes_from_its_folder_or_its_name(source, token, where):
    assert token_of_photo(source) == (token, where)


def test_a_folder_without_identifier_is_refused():
    with pytest.raises(DatasetError, match=r"'__/'|__/"):
        token_of_photo("photos/__/a.jpg")


def test_class_word_completes_the_instance_prompt():
    assert caption("photo of {token} {class}", "shrk", "man") == "photo of shrk man"
    assert caption("photo of {token} {class}", "shrk", None) == "photo of shrk"


@pytest.mark.parametrize("text, expected", [
    ("shrk smiling at the beach", "shrk smiling at the beach"),
    ("a SHRK at night", "a SHRK at night"),
    ("a man smiling  at the beach\n", "a shrk man smiling at the beach"),
    ("smiling at the beach", "photo of shrk man, smiling at the beach"),
    ("shrkman in a hat", "photo of shrk man, shrkman in a hat"),
    ("", "photo of shrk man"),
])
def test_caption_files_get_the_token_when_they_lack_it(text, expected):
    assert caption_from_text(text, "shrk", "man", "photo of {token} {class}") == expected


# Class words.
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
