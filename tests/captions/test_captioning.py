"""Subjects, class words and captions in dataset/manifest.json; every bad input named at once."""

import pytest

from dreambooth_core.captions.captioning import caption_dataset
from dreambooth_core.config import CaptionSettings
from dreambooth_core.errors import DatasetError
from dreambooth_core.session.paths import DATASET_MANIFEST


def captioned(prepared, tokenizer, files, **settings) -> dict:
    session = prepared(files)
    caption_dataset(session, tokenizer, CaptionSettings(**settings))
    return session.read_json(DATASET_MANIFEST)


def test_subjects_from_folders_and_file_names_with_their_class_words(prepared, small_tokenizer):
    manifest = captioned(prepared, small_tokenizer, {
        "ohwx/IMG_1.jpg": None, "ohwx/IMG_2.jpg": "a dog asleep", "shrk (1).jpg": "smiling",
        "shrk (2).jpg": None}, class_word="shrk=man,ohwx=dog")
    captions = {item["source"]: (item["token"], item["caption"]) for item in manifest["items"]}
    assert captions == {
        "photos/ohwx/IMG_1.jpg": ("ohwx", "photo of ohwx dog"),
        "photos/ohwx/IMG_2.jpg": ("ohwx", "a ohwx dog asleep"),
        "photos/shrk (1).jpg": ("shrk", "photo of shrk man, smiling"),
        "photos/shrk (2).jpg": ("shrk", "photo of shrk man"),
    }
    assert manifest["subjects"] == {
        "ohwx": {"class_word": "dog", "instance_prompt": "photo of ohwx dog", "class_prompt": "photo of dog",
                 "photos": 2, "from": ["ohwx/"]},
        "shrk": {"class_word": "man", "instance_prompt": "photo of shrk man", "class_prompt": "photo of man",
                 "photos": 2, "from": ["shrk (1).jpg", "shrk (2).jpg"]},
    }


def test_the_token_flag_names_a_single_subject(prepared, small_tokenizer):
    manifest = captioned(prepared, small_tokenizer, {"IMG_1.jpg": None}, token="zork", class_word="person")
    assert [item["caption"] for item in manifest["items"]] == ["photo of zork person"]


def test_photos_named_without_letters_are_the_token_flag_s_subject(prepared, small_tokenizer):
    files = {"🐶 (1).jpg": None, "🐶 (2).jpg": None, "ohwx (3).jpg": None}
    manifest = captioned(prepared, small_tokenizer, files, token="ohwx", class_word="dog")
    assert {item["token"] for item in manifest["items"]} == {"ohwx"}
    assert manifest["subjects"]["ohwx"]["from"] == ["ohwx (3).jpg", "🐶 (1).jpg", "🐶 (2).jpg"]
    with pytest.raises(DatasetError, match="no identifier in the file name"):  # without --token: no subject
        captioned(prepared, small_tokenizer, {"🐶 (1).jpg": None}, class_word="dog")


def test_every_bad_input_is_named_in_one_error(prepared, small_tokenizer):
    with pytest.raises(DatasetError) as error:
        captioned(prepared, small_tokenizer, {
            "(1).jpg": None, "shrk/a.jpg": None, "Shrk/b.jpg": None, "dog (1).jpg": None,
            "zork (1).jpg": "a man" + " do" * 80}, class_word="dog")
    lines = str(error.value).splitlines()
    assert any(line.strip().startswith("(1).jpg: no identifier in the file name") for line in lines)
    assert any("Shrk/ and shrk/: two subjects with the same token 'shrk'" in line for line in lines)
    assert any("dog (1).jpg: the token 'dog' equals its class word" in line for line in lines)
    long = next(line for line in lines if "zork (1).txt" in line)
    assert "90 tokens, more than the text encoder's 77" in long and "Shorten it" in long


def test_a_token_flag_with_several_subjects_is_refused(prepared, small_tokenizer):
    with pytest.raises(DatasetError, match="--token 'zork' names one subject, but the photos hold 2"):
        captioned(prepared, small_tokenizer, {"ohwx/a.jpg": None, "shrk (1).jpg": None}, token="zork")


def test_class_words_for_unknown_subjects_are_refused(prepared, small_tokenizer):
    with pytest.raises(DatasetError, match="--class-word names zork, but the subjects are shrk"):
        captioned(prepared, small_tokenizer, {"shrk (1).jpg": None}, class_word="zork=man")
