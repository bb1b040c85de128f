"""The identifier token a user names their photos (or their folders) with, class words (what kind
of thing each subject is: 'man', 'dog', 'style'), and captions."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# The --class-word syntax, parsed once (config.py), for the callers of the class words here.
from dreambooth_core.config import parse_class_words  # noqa: F401
from dreambooth_core.errors import DatasetError

# "shrk (1)", "shrk(2)", "shrk_3", "shrk-4", "shrk 5" -> "shrk"; "r2d2" stays whole.
_NUMBER_SUFFIX = re.compile(r"(?:\s*\(\d+\)|[\s_-]+\d+)$")


def token_from_filename(name: str) -> str:
    token = _NUMBER_SUFFIX.sub("", PurePosixPath(name).stem).strip()
    if not any(c.isalnum() for c in token):
        raise DatasetError(f"{name}: no identifier in the file name. Name photos after the "
                           "subject's identifier, e.g. 'shrk (1).jpg', or pass --token.")
    return token


def token_from_folder(name: str) -> str:
    token = name.strip()
    if not any(c.isalnum() for c in token):
        raise DatasetError(f"{name}/: no identifier in the folder name. Name each sub-folder of "
                           "the photos after its subject's identifier, e.g. 'shrk/'.")
    return token


def token_of_photo(source: str) -> tuple[str, str]:
    """(token, where it came from) for a session photo 'photos/shrk (1).jpg' or 'photos/shrk/a.jpg'."""
    parts = PurePosixPath(source).parts[1:]
    if len(parts) > 1:
        return token_from_folder(parts[0]), f"{parts[0]}/"
    return token_from_filename(parts[0]), parts[0]


def caption(template: str, token: str, class_word: str | None = None) -> str:
    text = template.replace("{token}", token).replace("{class}", class_word or "")
    return " ".join(text.split())


def caption_from_text(text: str, token: str, class_word: str | None, template: str) -> str:
    """A caption file's text, with the token put in when the text lacks it:
    before the class word if the text has it ('a man smiling' -> 'a shrk man smiling'),
    else after the instance prompt ('photo of shrk man, smiling')."""
    text = " ".join(text.split())
    if re.search(rf"(?<!\w){re.escape(token)}(?!\w)", text, re.IGNORECASE):
        return text
    found = class_word and re.search(rf"(?<!\w){re.escape(class_word)}(?!\w)", text, re.IGNORECASE)
    if found:
        return f"{text[:found.start()]}{token} {text[found.start():]}"
    prompt = caption(template, token, class_word)
    return f"{prompt}, {text}" if text else prompt


# Class words.
CLASS_PROMPT = "photo of {class}"
EXAMPLE_CLASSES = ("person", "man", "woman", "dog", "style")
# Class words that mean the subject is a person: face checks apply, and a caption's words for a person
# name the subject.
PERSON_WORDS = frozenset(
    "person people man woman boy girl child kid baby toddler teen teenager guy lady gentleman "
    "male female human adult face portrait character actor actress model".split())


def class_word_for(token: str, words: dict[str | None, str]) -> str | None:
    return words.get(token.lower(), words.get(None))


def class_prompt(word: str | None, template: str = CLASS_PROMPT) -> str | None:
    return template.replace("{class}", word) if word else None
