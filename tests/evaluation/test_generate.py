"""`dreambooth generate` and the dreambooth-generate flow on a trained tiny session: the finished
model, a snapshot and a committed checkpoint; the images, their settings and the UI artifact."""

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from sessions import opened_session

from dreambooth_core.generation.pipeline import build_pipeline, render
from dreambooth_core.session.folder import Session
from dreambooth_core.training.data.randomness import generator_for
from flows.cli import main

pytestmark = pytest.mark.slow  # a CLI training run: the full suite only

REPO = Path(__file__).resolve().parents[2]
BEACH = "a photo of {token} {class} on the beach"
FAST = ["--inference-steps", "3"]


@pytest.fixture(scope="module")
def session(prefect_api_url, tmp_path_factory) -> Path:
    """Checkpoints at 4 and 6 are kept; step 2 only as a snapshot. Exported in fp32, so the
    final export holds exactly the last checkpoint's weights."""
    root = tmp_path_factory.mktemp("generate")
    assert main(["train", "--session", "s", "--storage", str(root), "--photos", str(REPO / "examples" / "photos"),
                 "--model", "tiny", "--steps", "6", "--chunk-steps", "2", "--sample-every", "0",
                 "--snapshot-every", "2", "--keep-snapshots", "5", "--learning-rate", "1e-3",
                 "--export-precision", "fp32"]) == 0
    return root / "s"


def generate(session: Path, *args: str) -> int:
    return main(["generate", "--session", session.name, "--storage", str(session.parent), *FAST, *args])


def newest_generation(session: Path) -> Path:
    return max((session / "generations").iterdir(), key=lambda p: p.stat().st_mtime_ns)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_the_finished_model_renders_each_prompt_per_subject_into_generations(session, capsys):
    assert generate(session, BEACH, "a red car", "--count", "2", "--seed", "5") == 0
    folder = newest_generation(session)
    assert f"into {session}/generations/{folder.name}/" in capsys.readouterr().out
    assert folder.name.endswith("-step-000006")
    record = json.loads((folder / "generation.json").read_text())
    assert record["step"] == 6 and record["source"] == "checkpoint"
    assert [p["prompt"] for p in record["prompts"]] == ["a photo of shrk on the beach", "a red car"]
    assert record["settings"]["seed"] == 5 and record["settings"]["count"] == 2
    assert sorted(p.name for p in folder.glob("*.png")) == ["00-00.png", "00-01.png", "01-00.png", "01-01.png",
                                                             "grid.png"]
    assert Image.open(folder / "00-00.png").size == (64, 64)
    assert Image.open(folder / "grid.png").size == (128, 128)
    assert main(["status", "s", "--storage", str(session.parent)]) == 0
    assert f"newest {folder.name}/ (dreambooth generate)" in capsys.readouterr().out


def test_the_images_are_those_of_the_final_export(session):
    """What generate renders from the last checkpoint is the model the user downloads."""
    assert generate(session, "a red car", "--seed", "3") == 0
    rendered = pixels(newest_generation(session) / "00-00.png")
    pipeline = build_pipeline(str(session / "diffusers"), torch.device("cpu"))
    (image,) = render(pipeline, "a red car", [generator_for(3, 0, "generate")], 64, 3)
    assert np.abs(rendered - np.asarray(image.convert("RGB"), dtype=np.int16)).max() <= 1


def test_the_same_seed_gives_the_same_images_and_another_seed_others(session):
    runs = []
    for seed in ("1", "1", "2"):
        assert generate(session, "a red car", "--seed", seed) == 0
        runs.append(pixels(newest_generation(session) / "00-00.png"))
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_a_snapshot_and_an_older_checkpoint_render_their_own_weights(session):
    images = {}
    for step in ("2", "4", "6"):
        assert generate(session, "a red car", "--step", step) == 0
        folder = newest_generation(session)
        assert json.loads((folder / "generation.json").read_text())["source"] == (
            "snapshot" if step == "2" else "checkpoint")
        images[step] = pixels(folder / "00-00.png")
    assert not np.array_equal(images["2"], images["4"]) and not np.array_equal(images["4"], images["6"])


def test_a_checkpoint_s_optimizer_state_is_not_read(session, monkeypatch):
    read = []
    original = Session.read_bytes

    def recording(self, relative):
        read.append(relative)
        return original(self, relative)

    monkeypatch.setattr(Session, "read_bytes", recording)
    assert generate(session, "a red car", "--step", "4") == 0
    checkpoint = [name.rsplit("/", 1)[1] for name in read if name.startswith("checkpoints/step-000004/")]
    assert "weights.safetensors" in checkpoint
    every = {p.name for p in (session / "checkpoints" / "step-000004").iterdir()}
    assert set(checkpoint) < every and not any("optim" in name for name in checkpoint)


def test_size_negative_prompt_and_guidance_are_used_and_recorded(session):
    assert generate(session, "a red car", "--width", "96", "--height", "64", "--negative-prompt", "blurry",
                    "--guidance-scale", "3") == 0
    folder = newest_generation(session)
    assert Image.open(folder / "00-00.png").size == (96, 64)
    settings = json.loads((folder / "generation.json").read_text())["settings"]
    assert settings["negative_prompt"] == "blurry" and settings["guidance_scale"] == 3.0


def test_a_step_that_does_not_exist_lists_the_steps_there_are(session, capsys):
    before = set((session / "generations").iterdir())
    assert generate(session, "a red car", "--step", "3") == 2
    err = capsys.readouterr().err
    assert "no checkpoint or snapshot at step 3" in err
    assert "2 (snapshot), 4 (checkpoint), 6 (checkpoint)" in err
    assert set((session / "generations").iterdir()) == before


def test_a_prompt_over_77_tokens_is_refused_before_anything_renders(session, capsys):
    before = set((session / "generations").iterdir())
    assert generate(session, "a red car", "a photo of {token} " + "very " * 80 + "far away") == 2
    err = capsys.readouterr().err
    assert "1 prompt(s) are longer than the text encoder reads (77 tokens" in err
    assert "'a photo of shrk very very" in err  # as filled in for the subject
    assert set((session / "generations").iterdir()) == before


def test_bad_settings_are_named(session, capsys):
    assert generate(session, "a red car", "--width", "100") == 2
    assert "--width 100: Input should be a multiple of 8" in capsys.readouterr().err
    assert generate(session, "a red car", "--count", "0") == 2
    assert "--count 0: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_a_session_without_a_finished_chunk_says_to_train_it_first(tmp_path, capsys):
    opened_session(tmp_path, "new", model="tiny")
    assert main(["generate", "--session", "new", "--storage", str(tmp_path), "a red car"]) == 2
    assert "has no committed checkpoint or snapshot yet: train it until its first chunk ends" in \
        capsys.readouterr().err


def test_an_unknown_session_is_named(tmp_path, capsys):
    assert main(["generate", "--session", "nope", "--storage", str(tmp_path), "a red car"]) == 2
    assert "there is no session 'nope'" in capsys.readouterr().err


def test_the_flow_shows_the_images_in_the_prefect_ui(session, prefect_api_url):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from dreambooth_core.config import GenerationSettings
    from flows.generate import dreambooth_generate

    result = dreambooth_generate("s", [BEACH], str(session.parent), settings=GenerationSettings(inference_steps=2))
    assert result.step == 6 and result.prompts[0].prompt == "a photo of shrk on the beach"
    with get_client(sync_client=True) as client:
        versions = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["generations-s"])))
    artifact = max(versions, key=lambda a: a.created)
    assert "# Images of session s at step 6" in artifact.data and "2 steps" in artifact.data
    assert "a photo of shrk on the beach" in artifact.data and "](data:image/jpeg;base64," in artifact.data


def test_a_finished_training_run_triggers_the_generate_deployment_with_its_session(session, prefect_api_url):
    """The trained event the run sent, rendered into the trigger's parameters as Prefect renders them."""
    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    from flows.generate import dreambooth_generate
    from flows.trained_event import TRAINED

    deployment = next(d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
                      if d["name"] == "generate-local")
    (trigger,) = deployment["triggers"]
    assert trigger["expect"] == [TRAINED]
    event = trained_event(prefect_api_url, str(session.parent))
    parameters = dict(trigger["parameters"])
    RunDeployment._upgrade_v1_templates(parameters)
    rendered = hydrate(parameters, HydrationContext(render_jinja=True, jinja_context={"event": event}))
    assert rendered == {"session": "s", "storage": str(session.parent), "storage_block": None}
    arguments = {**deployment["parameters"], **rendered}
    dreambooth_generate.validate_parameters(arguments)


def trained_event(api: str, storage: str):
    """The newest dreambooth.session.trained event of session s on `storage`, from the server."""
    from prefect.events.schemas.events import ReceivedEvent

    from flows.trained_event import TRAINED

    body = {"filter": {"event": {"name": [TRAINED]}, "occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 50}
    for _ in range(60):  # the server stores events a moment after they arrive
        events = httpx.post(f"{api}/events/filter", json=body, timeout=30).json()["events"]
        mine = [e for e in events if e["payload"].get("storage") == storage]
        if mine:
            return ReceivedEvent.model_validate(mine[0])
        time.sleep(0.5)
    raise AssertionError(f"no {TRAINED} event for {storage}")
