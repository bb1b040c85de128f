"""The whole flow through Prefect on the tiny model, as a user runs it."""

import hashlib
import json
import time
from pathlib import Path

import pytest

from flows.cli import main

STEPS, CHUNK = 12, 4


def train(storage: Path, photos: Path | None = None, *extra: str) -> int:
    args = ["train", "--session", "shrk", "--storage", str(storage), "--model", "tiny",
            "--steps", str(STEPS), "--chunk-steps", str(CHUNK), *extra]
    return main(args + (["--photos", str(photos)] if photos else []))


def flow_runs_of(session: str, settle_s: float = 30):
    """Flow runs and their task runs as the Prefect UI shows them, newest run first. The server
    records task-run states from events, a moment after the run: wait (up to `settle_s`) until
    every task run of the newest flow run is recorded as final."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + settle_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[session])),
                                         sort=FlowRunSort.START_TIME_DESC)
            found = [(run, client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [run.id]})))
                     for run in runs]
            settled = found and all(t.state is not None and t.state.is_final() for t in found[0][1])
            if settled or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def logs_of(flow_run) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
    return "\n".join(log.message for log in logs)


@pytest.fixture(scope="module")
def trained(prefect_api_url, tmp_path_factory):
    """One finished session, trained once for the tests below."""
    root = tmp_path_factory.mktemp("flow")
    photos = Path(__file__).resolve().parents[2] / "examples" / "photos"
    assert train(root / "sessions", photos, "--sample-every", "0") == 0  # samples: test_monitoring.py
    return root / "sessions" / "shrk", photos


def test_outputs_are_written(trained):
    session, _ = trained
    for name in ("shrk.safetensors", "shrk.ckpt", "diffusers/model_index.json",
                 "diffusers/unet/diffusion_pytorch_model.safetensors"):
        assert (session / name).is_file(), name
    state = json.loads((session / "session.json").read_text())
    assert state["status"] == "complete"
    assert state["total_steps"] == STEPS
    assert sorted(p.name for p in (session / "checkpoints").iterdir()) == ["step-000008", "step-000012"]


def test_originals_are_copied_untouched_and_captions_use_the_file_names(trained):
    session, photos = trained
    for original in photos.iterdir():
        copy = session / "photos" / original.name
        assert hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(original.read_bytes()).digest()
    manifest = json.loads((session / "dataset" / "manifest.json").read_text())
    assert {item["caption"] for item in manifest["items"]} == {"photo of shrk"}
    assert len(manifest["items"]) == len(list(photos.iterdir()))


def test_exported_diffusers_folder_generates_images(trained):
    import torch
    from diffusers import StableDiffusionPipeline

    session, _ = trained
    pipeline = StableDiffusionPipeline.from_pretrained(session / "diffusers", torch_dtype=torch.float32)
    image = pipeline("photo of shrk", num_inference_steps=2, height=64, width=64,
                     generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_task_runs_carry_step_ranges(trained):
    (_, task_runs), *_ = flow_runs_of("shrk")
    names = {run.name for run in task_runs}
    assert {"train steps 0-4", "train steps 4-8", "train steps 8-12"} <= names


@pytest.mark.slow  # another flow run: the full suite only
def test_rerunning_a_finished_session_trains_nothing_and_says_so(trained):
    session, _ = trained
    before = (session / "shrk.safetensors").stat().st_mtime_ns
    assert train(session.parent) == 0  # no flags needed: the session remembers them
    (run, task_runs), *_ = flow_runs_of("shrk")
    states = {task.name: task.state.name for task in task_runs}
    assert all(states[f"train steps {s}-{s + CHUNK}"] == "Cached" for s in range(0, STEPS, CHUNK))
    assert states["export fp16"] == "Cached"
    assert "Trained 0 steps in this run; 3 of 3 chunks were cached; export was cached" in logs_of(run)
    assert (session / "shrk.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow  # another flow run: the full suite only
def test_a_lost_checkpoint_and_outputs_are_made_again_not_taken_from_the_cache(trained, tmp_path):
    import shutil

    copy = tmp_path / "sessions" / "shrk"  # the same session (its cached results too), with losses
    shutil.copytree(trained[0], copy)
    exported = (copy / "shrk.safetensors").read_bytes()
    shutil.rmtree(copy / "checkpoints" / "step-000012")
    (copy / "shrk.safetensors").unlink()
    assert train(copy.parent) == 0
    (run, task_runs), *_ = flow_runs_of("shrk")
    states = {task.name: task.state.name for task in task_runs}
    chunks = [states[f"train steps {s}-{s + CHUNK}"] for s in range(0, STEPS, CHUNK)]
    assert chunks == ["Cached", "Cached", "Completed"]
    assert states["export fp16"] == "Completed"
    logs = logs_of(run)
    assert "Trained 4 steps in this run; 2 of 3 chunks were cached" in logs
    assert "Exporting step 12 from the trainer's weights in memory" in logs
    assert (copy / "shrk.safetensors").read_bytes() == exported  # exact resume, exported from memory


@pytest.mark.slow  # another flow run: the full suite only
def test_changed_training_settings_are_refused_and_nothing_is_lost(trained):
    session, _ = trained
    files = {p: p.read_bytes() for p in session.rglob("*") if p.is_file()}
    assert train(session.parent, None, "--learning-rate", "1e-3", "--seed", "5") == 2
    assert {p: p.read_bytes() for p in session.rglob("*") if p.is_file()} == files


@pytest.mark.slow  # another flow run: the full suite only
def test_a_finished_session_can_be_trained_further(trained, tmp_path):
    import shutil

    copy = tmp_path / "sessions" / "shrk"
    shutil.copytree(trained[0], copy)
    assert main(["train", "--session", "shrk", "--storage", str(copy.parent), "--steps", "16"]) == 0
    state = json.loads((copy / "session.json").read_text())
    assert state["total_steps"] == 16 and state["export"]["step"] == 16
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["step-000012", "step-000016"]


@pytest.mark.slow  # another flow run: the full suite only
def test_memory_storage(prefect_api_url, photos):
    import fsspec

    assert main(["train", "--session", "mem", "--storage", "memory://sessions", "--model", "tiny",
                 "--photos", str(photos), "--steps", "2", "--chunk-steps", "1"]) == 0
    fs = fsspec.filesystem("memory")
    assert fs.exists("/sessions/mem/mem.safetensors")
    assert json.loads(fs.cat_file("/sessions/mem/session.json"))["status"] == "complete"


@pytest.mark.slow
def test_resume_works_after_the_original_photos_are_gone(prefect_api_url, tmp_path, photos):
    storage = tmp_path / "sessions"
    assert train(storage, photos, "--steps", "4") == 0
    for photo in photos.iterdir():
        photo.unlink()
    photos.rmdir()
    assert train(storage, None, "--steps", "8") == 0
    assert json.loads((storage / "shrk" / "session.json").read_text())["export"]["step"] == 8
