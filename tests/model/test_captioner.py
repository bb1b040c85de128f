"""The captioner of --captions auto: a hub Florence-2 that cannot be fetched is named with the way out."""

import pytest

from dreambooth_core.errors import ModelError
from dreambooth_core.model.captioner import captioner_name, fetch_captioner


def test_an_unfetchable_captioner_says_how_to_train_without_one(tmp_path):
    with pytest.raises(ModelError) as error:  # the tests run with HF_HUB_OFFLINE set
        fetch_captioner("florence-community/Florence-2-base", tmp_path)
    message = str(error.value)
    assert "florence-community/Florence-2-base" in message and "--captions token" in message
    assert captioner_name("tiny") != captioner_name("florence-community/Florence-2-base")
