"""--gpus N: data-parallel training in N processes (gloo on the CPU here), resumed exactly."""

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import safetensors.torch
import torch
from signalled import signal_when_paused

pytestmark = pytest.mark.slow  # a CLI or Prefect run each: the full suite only

REPO = Path(__file__).resolve().parents[2]
FAULT = Path(__file__).resolve().parent / "rank_fault"


def train(api_url, root: Path, kill_rank: str | None = None, pause_rank: str | None = None,
          signal_at: Path | None = None, torchrun: bool = False) -> subprocess.CompletedProcess:
    """The CLI on 2 CPU processes, spawned by it or (`torchrun`) started by torchrun; with
    `signal_at`, SIGTERM to the command once that marker appears."""
    root.mkdir(exist_ok=True)
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": f"{FAULT}{os.pathsep}{REPO}"}
    for name, value in (("DREAMBOOTH_KILL_RANK", kill_rank), ("DREAMBOOTH_PAUSE_RANK", pause_rank)):
        env.pop(name, None)
        if value:
            env[name] = value
    launch = [str(Path(sys.executable).with_name("torchrun")), "--nproc-per-node", "2"] if torchrun \
        else [sys.executable]
    command = [*launch, "-m", "flows.cli", "train", "--session", "s", "--storage", str(root / "sessions"),
               "--model", "tiny", "--photos", str(REPO / "examples" / "photos"), "--steps", "8",
               "--chunk-steps", "4", "--gpus", "2", "--device", "cpu", "--batch-size", "2",
               "--learning-rate", "1e-4", "--sample-every", "0", "--seed", "4"]
    if signal_at is None:
        return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return signal_when_paused(process, signal_at)


def weights(root: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(root / "sessions" / "s" / "checkpoints" / "step-000008" / "weights.safetensors")


@pytest.fixture(scope="module")
def whole(prefect_api_url, tmp_path_factory) -> Path:
    """The uninterrupted two-process run both tests compare with."""
    root = tmp_path_factory.mktemp("whole")
    result = train(prefect_api_url, root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 processes" in result.stderr
    return root


def test_a_crashed_process_resumes_to_the_uninterrupted_two_process_model(prefect_api_url, whole, tmp_path):
    crashed = train(prefect_api_url, tmp_path / "crashed", kill_rank="1:2")  # rank 1, step 5
    assert crashed.returncode != 0
    resumed = train(prefect_api_url, tmp_path / "crashed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from committed checkpoint at step 4" in resumed.stderr

    expected, actual = weights(whole), weights(tmp_path / "crashed")
    different = [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_a_sigterm_stops_every_process_at_the_same_step_which_commits_and_resumes_exactly(
        prefect_api_url, whole, tmp_path):
    """Preemption of a multi-GPU run: the signal reaches the launcher, which passes it on."""
    marker = tmp_path / "in-step"
    stopped = train(prefect_api_url, tmp_path / "stopped", pause_rank=f"1:5:{marker}", signal_at=marker)
    assert stopped.returncode == -signal.SIGTERM, stopped.stderr[-3000:]
    assert "rank 0 | SIGTERM: stopping at step 6; committing a checkpoint first" in stopped.stderr
    assert sorted(p.parent.name for p in (tmp_path / "stopped" / "sessions" / "s").glob(
        "checkpoints/*/MANIFEST.json")) == ["step-000004", "step-000006"]

    resumed = train(prefect_api_url, tmp_path / "stopped")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from committed checkpoint at step 6" in resumed.stderr
    expected, actual = weights(whole), weights(tmp_path / "stopped")
    assert [k for k in expected if not torch.equal(expected[k], actual[k])] == []


def test_torchrun_processes_train_the_same_model_as_spawned_ones_and_stop_together_on_sigterm(
        prefect_api_url, whole, tmp_path):
    """Each process torchrun starts joins its group; rank 0 runs the pipeline and hands every
    chunk to the other. Preemption reaches torchrun, which passes SIGTERM to both."""
    marker = tmp_path / "in-step"
    stopped = train(prefect_api_url, tmp_path / "run", pause_rank=f"1:5:{marker}", signal_at=marker,
                    torchrun=True)
    assert stopped.returncode != 0
    assert "rank 1 | Continuing from step 4 in memory" in stopped.stderr  # both kept their trainer
    assert "SIGTERM: stopping at step 6; committing a checkpoint first" in stopped.stderr, stopped.stderr[-3000:]
    assert sorted(p.parent.name for p in (tmp_path / "run" / "sessions" / "s").glob(
        "checkpoints/*/MANIFEST.json")) == ["step-000004", "step-000006"]

    resumed = train(prefect_api_url, tmp_path / "run", torchrun=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from committed checkpoint at step 6" in resumed.stderr
    assert "rank 1 | Resuming from committed checkpoint at step 6" in resumed.stderr
    expected, actual = weights(whole), weights(tmp_path / "run")
    assert [k for k in expected if not torch.equal(expected[k], actual[k])] == []


def test_a_deployment_flow_run_under_torchrun_trains_the_model_of_the_spawned_run(prefect_api_url, whole, tmp_path):
    """The Kubernetes pool's command for a pod with several GPUs (flows/torchrun_engine.py):
    rank 0 runs the flow run a worker would, the other rank follows it."""
    from prefect.client.orchestration import get_client

    from dreambooth_core.config import DreamBoothConfig

    config = DreamBoothConfig(session="s", storage=str(tmp_path / "sessions"), model="tiny",
                              photos=str(REPO / "examples" / "photos"), steps=8, chunk_steps=4, gpus=2,
                              device="cpu", batch_size=2, learning_rate=1e-4, sample_every=0, seed=4)
    with get_client(sync_client=True) as client:
        deployment = client.create_deployment(flow_id=client.create_flow_from_name("dreambooth-train"),
                                              name=f"torchrun-{uuid.uuid4().hex[:6]}",
                                              entrypoint="flows/dreambooth.py:dreambooth_train")
        run = client.create_flow_run_from_deployment(deployment, parameters={"config": config.model_dump(mode="json")})
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PREFECT__FLOW_RUN_ID": str(run.id), "PYTHONPATH": str(REPO)}
    result = subprocess.run([str(Path(sys.executable).with_name("torchrun")), "--nproc-per-node", "2",
                             "-m", "flows.torchrun_engine"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1 | Continuing from step 4 in memory" in result.stderr
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run.id).state.name == "Completed"
    expected, actual = weights(whole), weights(tmp_path)
    assert [k for k in expected if not torch.equal(expected[k], actual[k])] == []


def test_a_diverging_torchrun_run_ends_in_rank_0s_error_paragraph(tmp_path):
    """Every rank stops at the same check; rank 0 tells the user, the other ends quietly."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("torchrun")), "--nproc-per-node", "2", "-m", "flows.cli", "train",
         "--session", "s", "--storage", str(tmp_path / "sessions"), "--model", "tiny", "--photos",
         str(REPO / "examples" / "photos"), "--steps", "4", "--chunk-steps", "2", "--gpus", "2", "--device", "cpu",
         "--learning-rate", "1e30", "--sample-every", "0"],
        cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"},  # its own server
        capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "error: training stopped: the loss became NaN at step 2" in result.stderr
    assert "rank 1 | stopped with rank 0: training stopped" in result.stderr
    assert not list((tmp_path / "sessions" / "s").glob("checkpoints/step-*"))
