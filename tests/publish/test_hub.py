"""Publishing a session to a hub repo, against a local server that answers the hub's upload API
as the hub does (tests/hub_server.py): the files and the card arrive, a rerun uploads nothing,
a changed file is the only one sent again, and refusals end in one message without the token."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from hub_server import HubServer
from PIL import Image
from sessions import opened_session, prepare_folder

from dreambooth_core.captions.captioning import caption_dataset
from dreambooth_core.errors import PublishError, SessionError
from dreambooth_core.export.method_files import write_method
from dreambooth_core.export.training_metadata import training_record
from dreambooth_core.families import family_of, load_model_parts
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.generation.samples import grid_png
from dreambooth_core.publish.hub import publish_session
from dreambooth_core.reports.status import session_status, status_lines
from dreambooth_core.session.dataset_manifest import require_dataset_manifest
from dreambooth_core.session.state import ExportRecord, stored_config, update_state
from dreambooth_core.training.methods import set_up_method
from flows.cli import main

REPO = Path(__file__).resolve().parents[2]
TOKEN = "hf_writetokenwritetoken"


def lora_session(root: Path):
    """A finished LoRA session as training leaves it: its exports written by the real writers
    (adapters untrained), session.json recording them, a sample grid of the last step."""
    session = opened_session(root / "sessions", model="tiny", method="lora", steps=4, class_word="man")
    prepare_folder(session, REPO / "examples" / "photos", 64)
    local = fetch_model("tiny", root / "cache")
    caption_dataset(session, next(iter(family_of(local.family).token_judges(local.path).values())),
                    stored_config(session).captions)
    record = training_record(session)
    parts = load_model_parts(local.path, torch.device("cpu"))
    trainables = set_up_method(parts, record.training, list(record.captions))
    out = root / "out"
    out.mkdir()
    write_method("lora", local.path, local.family, parts, trainables, session.name, 4, torch.float16, out,
                 record)
    outputs = {}
    for file in sorted(out.rglob("*")):
        if file.is_file():
            session.put_file(file, file.relative_to(out).as_posix())
            outputs[file.relative_to(out).as_posix()] = file.stat().st_size
    update_state(session, status="complete", outputs=outputs, total_steps=4,
                 export=ExportRecord(fingerprint="f", step=4, precision="fp16"))
    prompts = [s.instance_prompt for s in require_dataset_manifest(session).subjects.values()]
    session.write_json("samples/step-000004.json", {"step": 4, "prompts": prompts})
    session.write_bytes("samples/step-000004.png", grid_png([[Image.new("RGB", (64, 64), "red")]]))
    return session


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return lora_session(tmp_path_factory.mktemp("publish"))


@pytest.fixture
def hub(hub_at, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # LFS, which the server speaks
    with HubServer(TOKEN) as server:
        hub_at(server.url)
        yield server


@pytest.fixture
def session(finished, tmp_path):
    """A copy of the finished session per test (each publish records itself in it)."""
    from dreambooth_core.session.folder import Session

    shutil.copytree(Path(finished.url), tmp_path / "sessions" / finished.name)
    return Session(str(tmp_path / "sessions"), finished.name)


def test_the_files_and_the_card_arrive(hub, session):
    result = publish_session(session, "alice/shrk-lora", TOKEN, private=True, endpoint=hub.url)
    repo = hub.repos["alice/shrk-lora"]
    assert repo.private and result.url == f"{hub.url}/alice/shrk-lora" and result.step == 4
    assert set(repo.files) == {".gitattributes", "README.md", "s.safetensors",
                               "s-diffusers/pytorch_lora_weights.safetensors", "samples/step-000004.png"}
    assert hub.file("alice/shrk-lora", "s.safetensors") == Path(session.path("s.safetensors")).read_bytes()
    assert repo.files["s.safetensors"]["lfs"] and repo.files["samples/step-000004.png"]["lfs"]
    card = hub.file("alice/shrk-lora", "README.md").decode()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["pipeline_tag"] == "text-to-image" and meta["library_name"] == "diffusers"
    assert {"lora", "text-to-image", "stable-diffusion-v1"} <= set(meta["tags"])
    assert meta["instance_prompt"] == "photo of shrk man"
    assert meta["widget"] == [{"text": "photo of shrk man", "output": {"url": "samples/step-000004.png"}}]
    assert "base_model" not in meta  # 'tiny' is no hub repo; the hub refuses any other base_model
    assert "`shrk`" in body and "| LoRA rank / alpha | 8 / 8 |" in body
    assert "![samples](samples/step-000004.png)" in body and "load_lora_weights" in body
    assert TOKEN not in card


def test_a_rerun_uploads_nothing_and_a_changed_file_goes_alone(hub, session):
    publish_session(session, "alice/shrk-lora", TOKEN, endpoint=hub.url)
    commits, uploads, asked = len(hub.committed), list(hub.uploaded), len(hub.requests)
    again = publish_session(session, "alice/shrk-lora", TOKEN, endpoint=hub.url)
    assert again.uploaded == [] and len(hub.committed) == commits and hub.uploaded == uploads
    assert not [path for _, path in hub.requests[asked:] if "/commit/" in path or "lfs" in path]
    session.write_bytes("samples/step-000004.png", grid_png([[Image.new("RGB", (64, 64), "blue")]]))
    changed = publish_session(session, "alice/shrk-lora", TOKEN, endpoint=hub.url)
    assert changed.uploaded == ["samples/step-000004.png"]
    assert [op["value"]["path"] for op in hub.committed[-1]] == ["samples/step-000004.png"]
    assert len(hub.uploaded) == len(uploads) + 1


def test_status_shows_where_a_session_was_published(hub, session):
    publish_session(session, "alice/shrk-lora", TOKEN, private=True, endpoint=hub.url)
    lines = status_lines(session_status(session))
    assert any(line.startswith("  published:   ") and f"{hub.url}/alice/shrk-lora (step 4, private" in line
               for line in lines)
    assert TOKEN not in (Path(session.url) / "published.json").read_text()


@pytest.mark.parametrize("token, repo, expected", [
    (None, "alice/shrk-lora", "publishing needs a Hugging Face token with write access"),
    ("hf_wrongwrongwrongwrong", "alice/shrk-lora", "the Hugging Face hub refused the token (401"),
    (TOKEN, "bob/shrk-lora", "refused to let this token write to 'bob/shrk-lora' (403"),
    (TOKEN, "no-slash", "is not a Hugging Face repo id")])
def test_a_refusal_is_one_message_without_the_token(hub, session, token, repo, expected):
    with pytest.raises(PublishError) as raised:
        publish_session(session, repo, token, endpoint=hub.url)
    assert expected in str(raised.value) and "\n" not in str(raised.value)
    assert TOKEN not in str(raised.value) and "hf_wrong" not in str(raised.value)
    assert not any(r.files.keys() - {".gitattributes"} for r in hub.repos.values())


def test_the_command_without_a_token_ends_in_one_error_paragraph(hub, session, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    code = main(["publish", "--session", session.name, "--storage", str(Path(session.url).parent),
                 "--repo", "alice/shrk-lora"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: publishing needs a Hugging Face token")
    assert err.count("\n") == 1
    assert hub.requests == []


def test_the_command_publishes_with_hf_token(hub, session, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    args = ["publish", "--session", session.name, "--storage", str(Path(session.url).parent), "--repo",
            "alice/shrk-lora"]
    assert main(args) == 0
    assert "(4 file(s) uploaded)" in capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "nothing changed, nothing uploaded" in out and TOKEN not in out


def test_a_step_replaces_what_the_last_publish_put_there(hub, session):
    """--step N: exports/step-NNNNNN/'s files go up, and the final outputs a publish put there before go."""
    for name in ("s.safetensors", "s-diffusers/pytorch_lora_weights.safetensors"):
        exported = name.replace("s", "s-step-000004", 1) if name.startswith("s.") else name.replace(
            "s-diffusers", "s-step-000004-diffusers")
        session.put_file(Path(session.path(name)), f"exports/step-000004/{exported}")
    publish_session(session, "alice/shrk-lora", TOKEN, endpoint=hub.url)
    result = publish_session(session, "alice/shrk-lora", TOKEN, step=4, endpoint=hub.url)
    assert set(hub.repos["alice/shrk-lora"].files) == {
        ".gitattributes", "README.md", "s-step-000004.safetensors",
        "s-step-000004-diffusers/pytorch_lora_weights.safetensors", "samples/step-000004.png"}
    assert result.deleted == ["s-diffusers/pytorch_lora_weights.safetensors", "s.safetensors"]
    # The LoRA bytes are the same under the new names: the hub had them, nothing was sent again.
    assert "s-step-000004.safetensors" in result.uploaded and len(set(hub.uploaded)) == len(hub.uploaded)


def test_a_step_without_its_export_is_named(hub, session):
    with pytest.raises(SessionError) as raised:
        publish_session(session, "alice/shrk-lora", TOKEN, step=2, endpoint=hub.url)
    assert "dreambooth export --session s --step 2" in str(raised.value)
