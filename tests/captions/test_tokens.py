"""The identifier comes from file names the way users name their photos."""

import pytest

from tasks.captions.tokens import caption, token_from_filename
from tasks.errors import DatasetError


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
