"""Tokenizers for the token tests: small ones of each kind whose vocabularies we choose, and CLIP's own."""

import gzip
from pathlib import Path

import pytest
from PIL import Image
from small_tokenizers import (
    byte_level_merges,
    small_merges,
    unigram_vocab,
    write_byte_level_tokenizer,
    write_unigram_tokenizer,
)

from dreambooth_core.captions.tokenizer import load_tokenizer
from dreambooth_core.model.tiny import write_tiny_tokenizer

CLIP_VOCAB = Path(__file__).resolve().parents[1] / "data" / "bpe_simple_vocab_16e6.txt.gz"
CLIP_MERGES = 49152 - 256 - 2  # the merges CLIP's tokenizer uses (the file holds more)


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory):
    model = tmp_path_factory.mktemp("small-model")
    write_tiny_tokenizer(model / "tokenizer", small_merges())
    return load_tokenizer(model)


@pytest.fixture(scope="session")
def unigram_model(tmp_path_factory):
    """A model folder whose tokenizer_2/ is the small Unigram tokenizer (FLUX.1's T5 place)."""
    model = tmp_path_factory.mktemp("unigram-model")
    write_unigram_tokenizer(model / "tokenizer_2", unigram_vocab())
    return model


@pytest.fixture(scope="session")
def unigram_tokenizer(unigram_model):
    return load_tokenizer(unigram_model, "tokenizer_2")


@pytest.fixture(scope="session")
def byte_level_model(tmp_path_factory):
    model = tmp_path_factory.mktemp("byte-level-model")
    write_byte_level_tokenizer(model / "tokenizer", byte_level_merges())
    return model


@pytest.fixture(scope="session")
def byte_level_tokenizer(byte_level_model):
    return load_tokenizer(byte_level_model)


@pytest.fixture(scope="session")
def clip_tokenizer(tmp_path_factory):
    lines = gzip.decompress(CLIP_VOCAB.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:CLIP_MERGES + 1]]
    model = tmp_path_factory.mktemp("clip-model")
    write_tiny_tokenizer(model / "tokenizer", merges)
    return load_tokenizer(model)


def write_photos(folder: Path, files: dict[str, str | None]) -> Path:
    """`files`: relative image path -> caption file text (None: no caption file)."""
    for index, (name, text) in enumerate(files.items()):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (index * 20, 100, 50)).save(path)
        if text is not None:
            path.with_suffix(".txt").write_text(text)
    return folder


@pytest.fixture
def prepared(tmp_path):
    """A function: photos (see write_photos) -> a session with them imported and prepared."""
    from sessions import opened_session, prepare_folder

    def prepare(files: dict[str, str | None]):
        session = opened_session(tmp_path / "sessions")
        prepare_folder(session, write_photos(tmp_path / "photos", files), 64)
        return session
    return prepare


@pytest.fixture(scope="session")
def tiny_describe():
    """The tiny random Florence-2's describe function (built once into the tests' model cache)."""
    import os

    from dreambooth_core.model.captioner import fetch_captioner, load_captioner

    return load_captioner(fetch_captioner("tiny", Path(os.environ["DREAMBOOTH_CACHE"])), "cpu")
