"""The tiny FLUX.2 [klein], built once for the family tests."""

from pathlib import Path

import pytest

from dreambooth_core.families.klein_tiny import build_tiny_klein_model


@pytest.fixture(scope="session")
def tiny_klein(tmp_path_factory) -> Path:
    return build_tiny_klein_model(tmp_path_factory.mktemp("tiny-klein") / "model")
