"""A session's outputs serve as the base model of the next one: its diffusers folder, and its
single file with and without --single-file-config (then diffusers borrows the architecture's
configs from the hub, here a local server answering as the hub would)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from web_server import FakeServer, hub_routes

from flows.cli import main

pytestmark = pytest.mark.slow  # a CLI run each: the full suite only

PHOTOS = Path(__file__).resolve().parents[2] / "examples" / "photos"
SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # what diffusers borrows an SD 1.x file's configs from


def train(root: Path, name: str, *model_args: str) -> Path:
    assert main(["train", "--session", name, "--storage", str(root), "--photos", str(PHOTOS),
                 "--steps", "2", "--sample-every", "0", *model_args]) == 0
    return root / name


@pytest.fixture(scope="module")
def first(prefect_api_url, tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("chain"), "a", "--model", "tiny")  # fp16 outputs, the default


def based_on(session: Path) -> str:
    return json.loads((session / "session.json").read_text())["config"]["base_model"]["model"]


def assert_trained(session: Path) -> None:
    name = session.name
    assert {f"{name}.safetensors", f"{name}.ckpt", "diffusers"} <= {p.name for p in session.iterdir()}
    assert (session / "checkpoints" / "step-000002").is_dir()


def test_diffusers_folder_of_a_session_trains_the_next(first):
    second = train(first.parent, "b", "--model", str(first / "diffusers"))
    assert_trained(second)
    assert based_on(second) == str(first / "diffusers")


def test_single_file_with_its_config_trains_the_next(first):
    second = train(first.parent, "c", "--model", str(first / "a.safetensors"),
                   "--single-file-config", str(first / "diffusers"))
    assert_trained(second)


def test_single_file_alone_borrows_the_configs_from_the_hub(first, hub_at):
    with FakeServer(hub_routes(SD15_REPO, first / "diffusers")) as hub:
        hub_at(hub.url())
        second = train(first.parent, "d", "--model", str(first / "a.safetensors"))
    assert_trained(second)
    assert any("/resolve/" in r["path"] and r["path"].endswith("unet/config.json") for r in hub.requests)
