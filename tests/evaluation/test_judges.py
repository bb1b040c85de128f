"""The judging models: tiny ones built offline, the paper's fetched from a hub (a local one here)."""

from pathlib import Path

import pytest
import torch
from PIL import Image
from web_server import FakeServer, hub_routes

from dreambooth_core.evaluation.judges import CLIP_REPO, DINO_REPO, fetch_judges, load_judges
from dreambooth_core.evaluation.metrics import prompt_fidelity, subject_fidelity

pytestmark = pytest.mark.slow  # builds and runs models: the full suite only
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def judges(tmp_path_factory):
    return load_judges(*fetch_judges("tiny", tmp_path_factory.mktemp("judges")))


def photos(count: int = 3) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted((REPO / "examples" / "photos").iterdir())[:count]]


def test_an_image_is_its_own_closest_match(judges):
    images = photos()
    for embed in (judges.dino_images, judges.clip_images):
        embeddings = embed(images)
        assert embeddings.shape[0] == 3 and embeddings.ndim == 2
        assert subject_fidelity(embeddings[:1], embeddings[:1]).mean == pytest.approx(1.0)
        assert subject_fidelity(embeddings[:1], embeddings[1:]).mean < 1 - 1e-6


def test_prompt_fidelity_compares_images_and_texts_in_one_space(judges):
    images = judges.clip_images(photos(2))
    texts = judges.clip_texts(["a dog in the snow", "a man on the beach"])
    assert texts.shape == images.shape
    value = prompt_fidelity(images, texts)
    assert -1 <= value.mean <= 1


def test_the_same_images_embed_the_same_each_time(judges):
    assert torch.equal(judges.dino_images(photos(1)), judges.dino_images(photos(1)))


def test_the_paper_models_are_fetched_once_then_read_offline(judges, hub_at, tmp_path, monkeypatch):
    import huggingface_hub.constants

    built = fetch_judges("tiny", tmp_path / "built")
    routes = hub_routes(DINO_REPO, built[0]) | hub_routes(CLIP_REPO, built[1])
    with FakeServer(routes) as server:
        hub_at(server.url())
        dino, clip = fetch_judges("hub", tmp_path / "cache")
        asked = len(server.requests)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert fetch_judges("hub", tmp_path / "cache") == (dino, clip)
    assert asked and not any(".ckpt" in r["path"] or "safety_checker" in r["path"] for r in server.requests)
    loaded = load_judges(dino, clip)
    assert torch.equal(loaded.dino_images(photos(1)), judges.dino_images(photos(1)))
