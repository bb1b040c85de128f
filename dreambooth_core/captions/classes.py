"""Class words: what kind of thing each subject is ('man', 'dog', 'style')."""

from __future__ import annotations

from dreambooth_core.config import parse_class_words  # noqa: F401 - the --class-word syntax, parsed once

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
