"""A training run that publishes itself (--publish-to), against the local hub server."""

from pathlib import Path

import pytest
from hub_server import HubServer

from flows.cli import main

REPO = Path(__file__).resolve().parents[2]
TOKEN = "hf_writetokenwritetoken"


@pytest.mark.slow
def test_a_finished_training_publishes_itself(prefect_api_url, hub_at, monkeypatch, tmp_path, capsys):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # LFS, which the server speaks
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HubServer(TOKEN) as hub:
        hub_at(hub.url)
        assert main(["train", "--session", "s", "--storage", str(tmp_path), "--photos",
                     str(REPO / "examples" / "photos"), "--model", "tiny", "--method", "lora", "--steps", "2",
                     "--chunk-steps", "2", "--publish-to", "alice/shrk", "--publish-private"]) == 0
        repo = hub.repos["alice/shrk"]
        assert repo.private and {"README.md", "s.safetensors", "samples/step-000002.png"} <= set(repo.files)
        assert hub.file("alice/shrk", "s.safetensors") == (tmp_path / "s" / "s.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["status", "s", "--storage", str(tmp_path)]) == 0
    assert f"published:   {hub.url}/alice/shrk (step 2, private" in capsys.readouterr().out
