"""A captioner's description made into a caption that trains the token: the subject's own words out."""

import pytest

from dreambooth_core.captions.subject_words import fit_caption, subject_caption

TEMPLATE = "photo of {token} {class}"


@pytest.mark.parametrize("described, class_word, expected", [
    ("A young man with short brown hair and a beard wearing a red jacket, standing outdoors.", "man",
     "photo of shrk man, wearing a red jacket, standing outdoors"),
    ("The image shows a woman smiling in a park. Her long blonde hair falls over her shoulders. "
     "She is wearing a blue dress.", "woman",
     "photo of shrk woman, smiling in a park. She is wearing a blue dress"),
    ("A fluffy brown dog sitting on green grass.", "dog", "photo of shrk dog, sitting on green grass"),
    ("A close-up of a person laughing", None, "photo of shrk, laughing"),  # no class word: a person
])
def test_the_subject_s_own_words_give_way_to_the_token(described, class_word, expected):
    assert subject_caption(described, "shrk", class_word, TEMPLATE) == expected


def test_a_subject_named_later_is_replaced_where_it_stands_and_one_never_named_gets_the_prompt():
    assert (subject_caption("A red car parked next to an old man.", "shrk", "man", TEMPLATE)
            == "a red car parked next to a shrk man")
    assert (subject_caption("A mountain lake at sunset.", "shrk", "man", TEMPLATE)
            == "photo of shrk man, a mountain lake at sunset")


def test_a_long_description_is_cut_at_a_clause_never_into_the_token_and_class_word():
    text = "photo of shrk man, smiling, in a red jacket, outdoors in the snow"
    assert fit_caption(text, "shrk man", lambda t: len(t.split()) <= 9) == "photo of shrk man, smiling, in a red jacket"
    assert fit_caption(text, "shrk man", lambda t: False) == "photo of shrk man"
    later = "a red car parked next to a shrk man on a street in the rain"
    assert fit_caption(later, "shrk man", lambda t: False) == "a red car parked next to a shrk man"
