"""Subjects, class words and captions in dataset/manifest.json; every bad input named at once;
--captions auto."""

import re

import pytest

from dreambooth_core.captions.caption_report import write_caption_report
from dreambooth_core.captions.captioning import AutoCaptioner, caption_dataset, caption_file_of, caption_mode
from dreambooth_core.config import CaptionSettings
from dreambooth_core.errors import DatasetError
from dreambooth_core.families.family import Family
from dreambooth_core.model.captioner import TINY_CAPTIONER
from dreambooth_core.session.dataset_manifest import require_dataset_manifest
from dreambooth_core.session.paths import CAPTIONS_REPORT, DATASET_MANIFEST


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


# --captions auto: each photo described by the (tiny) captioner, the token and class word put in,
# written beside the prepared photo, cached per image and captioner; a hand-written caption wins.

PHOTOS = {"shrk (1).jpg": None, "shrk (2).jpg": None, "shrk (3).jpg": "grinning at a party"}


def counting(describe, calls: list[int]) -> AutoCaptioner:
    def counted(images):
        calls.append(len(images))
        return describe(images)
    return AutoCaptioner(TINY_CAPTIONER, lambda: counted)


def auto_captions(session, tokenizer, captioner) -> dict[str, object]:
    caption_dataset(session, tokenizer, CaptionSettings(class_word="man"), mode="auto", captioner=captioner)
    return {item.source: item for item in require_dataset_manifest(session).items}


def test_every_caption_holds_the_token_and_class_word_and_a_hand_written_one_wins(
        prepared, small_tokenizer, tiny_describe):
    session, calls = prepared(PHOTOS), []
    items = auto_captions(session, small_tokenizer, counting(tiny_describe, calls))
    assert calls == [2]  # the photo with a hand-written caption is not described
    assert all(re.search(r"\bshrk man\b", item.caption) for item in items.values())
    hand = items["photos/shrk (3).jpg"]
    assert (hand.caption, hand.caption_origin) == ("photo of shrk man, grinning at a party", "hand-written")
    for source in ("photos/shrk (1).jpg", "photos/shrk (2).jpg"):
        item = items[source]
        assert item.caption_origin == "captioner" and item.caption_file == caption_file_of(item.file)
        assert session.read_bytes(item.caption_file).decode() == item.caption + "\n"  # editable, beside it
        assert len(item.caption) > len("photo of shrk man")  # the description is in it
    markdown = write_caption_report(session, require_dataset_manifest(session), "auto", TINY_CAPTIONER)
    assert session.read_bytes(CAPTIONS_REPORT).decode() == markdown
    assert markdown.count("](data:image/jpeg;base64,") == 3 and "grinning at a party" in markdown


def test_a_rerun_asks_the_captioner_nothing_and_keeps_an_edited_caption(prepared, small_tokenizer,
                                                                         tiny_describe):
    session, calls = prepared(PHOTOS), []
    first = auto_captions(session, small_tokenizer, counting(tiny_describe, calls))
    edited, removed = first["photos/shrk (1).jpg"], first["photos/shrk (2).jpg"]
    session.write_bytes(edited.caption_file, b"photo of shrk man, on a boat\n")
    session.remove(removed.caption_file)
    calls.clear()
    again = auto_captions(session, small_tokenizer, counting(tiny_describe, calls))
    assert calls == []  # the removed caption is made again from the cached description
    assert again["photos/shrk (1).jpg"].caption == "photo of shrk man, on a boat"
    assert again["photos/shrk (2).jpg"].caption == removed.caption
    assert session.exists(removed.caption_file)


def test_the_default_is_the_family_s_and_a_session_trained_on_the_rule_keeps_it(prepared, small_tokenizer):
    defaults = {family.title: family.default_captions for family in Family.defined}
    assert [mode for title, mode in defaults.items() if title.startswith("Stable Diffusion 1")] == ["token"]
    assert {mode for title, mode in defaults.items() if "SDXL" in title or "FLUX" in title} == {"auto"}
    session = prepared({"shrk (1).jpg": None})
    caption_dataset(session, small_tokenizer, CaptionSettings())  # the rule, as before --captions
    manifest = require_dataset_manifest(session)
    assert caption_mode("default", "auto", manifest, training_started=False) == "auto"
    assert caption_mode("default", "auto", manifest, training_started=True) == "token"  # resumes as trained
    assert caption_mode("auto", "token", manifest, training_started=True) == "auto"  # asked for: as asked


def test_a_photo_added_later_keeps_the_captions_written_beside_the_others(prepared, small_tokenizer,
                                                                           tiny_describe):
    session = prepared({"shrk (1).jpg": None})
    first = auto_captions(session, small_tokenizer, counting(tiny_describe, []))["photos/shrk (1).jpg"]
    session.write_bytes(first.caption_file, b"photo of shrk man, on a boat\n")
    session = prepared({"shrk (1).jpg": None, "shrk (2).jpg": None})  # the dataset is prepared again
    calls = []
    again = auto_captions(session, small_tokenizer, counting(tiny_describe, calls))
    assert again["photos/shrk (1).jpg"].caption == "photo of shrk man, on a boat" and calls == [1]
