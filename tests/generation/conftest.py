"""Fixtures of a captioned session (captioned_sessions.py) for class images and samples."""

import shutil
from pathlib import Path

import pytest
from captioned_sessions import EXAMPLE_PHOTOS, captioned_session


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
