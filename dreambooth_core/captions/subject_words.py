"""A described photo's caption, made to train the subject's token: the subject's own words out,
the token and class word in.

A captioner writes "A young man with short brown hair and a beard wearing a red jacket, standing
outdoors." The words that describe the subject itself (the noun naming it, its age, build and
colours, its hair, beard, eyes and skin) would compete with the token for what the subject looks
like: the model would tie the identity to "brown hair" and the token would carry less of it. They
are removed. What is left (what the subject wears and does, where it is, the light) is what the
token must not learn, which is why captions help. The rule is written out here rather than asked
of the captioner: a prompt to leave out the person's looks is not followed by the small captioners
that fit beside training.

"A young man with ... standing outdoors." -> "photo of shrk man, wearing a red jacket, standing outdoors"
"""

from __future__ import annotations

import re

from dreambooth_core.captions.tokens import PERSON_WORDS, caption, caption_from_text

# Words for a person in captions (PERSON_WORDS less those that name a picture or a job).
PERSON_NOUNS = (PERSON_WORDS - {"face", "portrait", "character", "model", "actor", "actress",
                                "human"}
                | {"men", "women", "boys", "girls", "children", "kids", "people"})
# Said of the subject right before its noun: age, build, looks, colours, origin.
SUBJECT_ADJECTIVES = frozenset(
    "young old older elderly middle-aged aged little small big large tall short slim thin skinny fat "
    "chubby muscular handsome beautiful pretty attractive cute adorable fluffy furry bald bearded "
    "blond blonde brunette redheaded red-haired dark-haired fair-haired curly-haired long-haired "
    "short-haired gray-haired grey-haired white-haired asian african caucasian european indian latino "
    "hispanic black white brown red gray grey golden tan yellow orange dark light".split())
# What a trait clause after the noun is about ("with short brown hair and a beard").
TRAITS = ("hair", "hairs", "haircut", "beard", "mustache", "moustache", "stubble", "eyes",
          "eyebrows", "skin", "freckles", "complexion", "fur", "coat", "ears", "whiskers")
_TRAIT = r"(?:" + "|".join(TRAITS) + r")"
# Captioners open with these; they say nothing about the photo.
_LEAD_IN = re.compile(
    r"^(?:(?:in )?(?:the|this) (?:image|photo|picture|photograph)\s*,?\s*"
    r"(?:is|shows|features|depicts|contains|we can see|there is)?\s*)?"
    r"(?:(?:an? )?(?:close-up|closeup|portrait|selfie|headshot|photo|picture)\s+(?:photo\s+)?of\s+)?",
    re.IGNORECASE)
_TRAIT_CLAUSE = re.compile(rf"\s*,?\s*(?:with|who has|that has|having)\s+[^,.]*\b{_TRAIT}\b",
                           re.IGNORECASE)
_TRAIT_SENTENCE = re.compile(rf"(?:^|(?<=[.!?]\s))(?:his|her|its|their)\s+[^.]*\b{_TRAIT}\b[^.]*[.!?]?\s*",
                             re.IGNORECASE)


def subject_nouns(class_word: str | None) -> set[str]:
    """The nouns that name the subject in a caption: a person's (no class word means a person, as
    the face checks take it), else the class word and its plural."""
    word = (class_word or "").strip().lower()
    if not word or word in PERSON_WORDS:
        return set(PERSON_NOUNS) | ({word} if word else set())
    return {word, word + "s", word + "es"}


def subject_caption(described: str, token: str, class_word: str | None, template: str) -> str:
    """The captioner's text with the subject's own words replaced by the token and class word."""
    text = _LEAD_IN.sub("", " ".join(described.split()), count=1)
    # 'A man' -> 'a man'
    text = text[:1].lower() + text[1:] if re.match(r"[A-Z](?:[a-z]|\s)", text) else text
    text = _TRAIT_SENTENCE.sub("", text)
    nouns = "|".join(sorted((re.escape(n) for n in subject_nouns(class_word)), key=len,
                            reverse=True))
    adjectives = "|".join(re.escape(a) for a in SUBJECT_ADJECTIVES)
    phrase = re.compile(rf"\b(?:(?:a|an|the)\s+)?(?:(?:{adjectives})(?:\s*,\s*|\s+and\s+|\s+))*(?:{nouns})\b",
                        re.IGNORECASE)
    found = phrase.search(text)
    prompt = caption(template, token, class_word)
    if found is None:
        return caption_from_text(_tidy(text), token, class_word, template)
    after = _TRAIT_CLAUSE.sub("", text[found.end():], count=1)
    if not text[:found.start()].strip():  # the caption is about the subject: the prompt opens it
        rest = _tidy(re.sub(r"^\s*(?:is|are)\s+", " ", after))
        return f"{prompt}, {rest}" if rest else prompt
    return _tidy(f"{text[:found.start()]}a {caption('{token} {class}', token, class_word)}{after}")


def _tidy(text: str) -> str:
    text = re.sub(r"\s+([,.])", r"\1", " ".join(text.split()))
    return re.sub(r"^[\s,.;:]+|[\s,.;:]+$", "", text)


def fit_caption(text: str, subject: str, fits) -> str:
    """`text` cut at its last clause (then word) until `fits(text)`, never into `subject` (the token
    and class word) or what precedes it. A long description is cut rather than refused: the user
    did not write it."""
    found = text.find(subject)
    floor = found + len(subject) if found >= 0 else 0
    while not fits(text) and len(text) > floor:
        cut = max(text.rfind(", "), text.rfind(". "))
        text = text[:cut] if cut >= floor else text[:max(text.rfind(" "), floor)]
    return text.rstrip(" ,.")
