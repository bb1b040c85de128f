"""Class words: what kind of thing each subject is ('man', 'dog', 'style')."""

from __future__ import annotations

CLASS_PROMPT = "photo of {class}"
EXAMPLE_CLASSES = ("person", "man", "woman", "dog", "style")


def parse_class_words(spec: str | None) -> dict[str | None, str]:
    """'man' -> {None: 'man'} (every subject); 'shrk=man,ohwx=dog' -> {'shrk': 'man', 'ohwx': 'dog'}.

    A bare word and token=word entries may be mixed: the bare word covers the rest."""
    words: dict[str | None, str] = {}
    if spec is None or not spec.strip():
        return words
    for entry in spec.split(","):
        token, _, word = entry.rpartition("=")
        token, word = token.strip().lower() or None, word.strip()
        if not word or (token is None and "=" in entry) or token in words:
            raise ValueError(f"class word entry {entry.strip()!r} in {spec!r} is not valid: give one "
                             "word for every subject ('man') or token=word pairs separated by commas "
                             "('shrk=man,ohwx=dog'), each token once")
        words[token] = word
    return words


def class_word_for(token: str, words: dict[str | None, str]) -> str | None:
    return words.get(token.lower(), words.get(None))


def class_prompt(word: str | None, template: str = CLASS_PROMPT) -> str | None:
    return template.replace("{class}", word) if word else None
