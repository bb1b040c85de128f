"""A captioned session (real photos, prepared and captioned) to make class images and samples for."""

import shutil
from pathlib import Path

import pytest

EXAMPLE_PHOTOS = Path(__file__).resolve().parents[2] / "examples" / "photos"

FAST = {"steps": 2, "batch_size": 2}  # class images at 64 px from the tiny model, quickly


def captioned_session(storage: Path, name: str, model_path: str, photos: Path, class_word: str | None):
    from sessions import opened_session, prepare_folder

    from dreambooth_core.captions.captioning import caption_dataset
    from dreambooth_core.captions.tokenizer import load_tokenizer
    from dreambooth_core.config import CaptionSettings

    session = opened_session(storage, name)
    prepare_folder(session, photos, 64, workers=1)
    caption_dataset(session, load_tokenizer(model_path), CaptionSettings(class_word=class_word))
    return session


@pytest.fixture
def two_subject_photos(tmp_path) -> Path:
    """The example photos twice: sub-folders shrk/ and ohwx/, one per subject."""
    folder = tmp_path / "photos"
    for token in ("shrk", "ohwx"):
        shutil.copytree(EXAMPLE_PHOTOS, folder / token)
    return folder


@pytest.fixture
def session(tmp_path, tiny_model_path):
    """Session 'demo' in tmp_path/sessions: subject shrk, class word man."""
    return captioned_session(tmp_path / "sessions", "demo", tiny_model_path, EXAMPLE_PHOTOS, "man")
