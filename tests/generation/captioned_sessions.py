"""A captioned session (real photos, prepared and captioned) to make class images and samples for.

A module of its own, not conftest.py: `from conftest import` finds whichever conftest was imported
first when several test folders are collected in one process."""

from pathlib import Path

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
