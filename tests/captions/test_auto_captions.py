"""--captions auto: each photo described by the (tiny) captioner, the token and class word put in,
written beside the prepared photo, cached per image and captioner; a hand-written caption wins."""

import re

from dreambooth_core.captions.caption_report import write_caption_report
from dreambooth_core.captions.captioning import caption_dataset, caption_mode, caption_file_of
from dreambooth_core.captions.described import AutoCaptioner
from dreambooth_core.config import CaptionSettings
from dreambooth_core.families.family import Family
from dreambooth_core.model.captioner import TINY_CAPTIONER
from dreambooth_core.session.dataset_manifest import require_dataset_manifest
from dreambooth_core.session.paths import CAPTIONS_REPORT

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
