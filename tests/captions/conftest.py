"""Tokenizers for the token tests: a small one whose vocabulary we choose, and CLIP's own."""

import gzip
import itertools
from pathlib import Path

import pytest
from PIL import Image

from dreambooth_core.captions.analysis import COMMON_MERGES
from dreambooth_core.captions.tokenizer import load_tokenizer
from dreambooth_core.model.tiny import byte_alphabet, word_merges, write_tiny_tokenizer

CLIP_VOCAB = Path(__file__).resolve().parents[1] / "data" / "bpe_simple_vocab_16e6.txt.gz"
CLIP_MERGES = 49152 - 256 - 2  # the merges CLIP's tokenizer uses (the file holds more)

COMMON_WORDS = ["photo", "of", "the", "man", "dog", "do", "re", "mi"]
EARLY_PIECES = [("s", "h"), ("sh", "r")]
# Merged after COMMON_MERGES merges, as rare words are in CLIP ('ohwx' is rank ~47,500):
# two rare whole words, and pieces that make some pronounceable words 2 tokens long.
LATE_WORDS = ["ohwx", "sks"]
LATE_PIECES = [("z", "o"), ("k", "a"), ("b", "e"), ("r", "k</w>"), ("n", "d</w>")]


def filler_merges(count: int) -> list[tuple[str, str]]:
    """Merges of two characters that no word in the tests contains (no ASCII letters)."""
    symbols = [c for c in byte_alphabet() if not ("a" <= c.lower() <= "z")]
    return list(itertools.islice(itertools.product(symbols, symbols), count))


def small_merges() -> list[tuple[str, str]]:
    early = word_merges(COMMON_WORDS) + EARLY_PIECES
    return early + filler_merges(COMMON_MERGES - len(early)) + word_merges(LATE_WORDS) + LATE_PIECES


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory):
    model = tmp_path_factory.mktemp("small-model")
    write_tiny_tokenizer(model / "tokenizer", small_merges())
    return load_tokenizer(model)


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
