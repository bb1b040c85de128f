"""SIGTERM (a preemptible GPU being reclaimed): finish the step, commit if it fits, exit."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from signalled import signal_when_paused

from dreambooth_core.training.preemption import stop_requests

pytestmark = pytest.mark.slow  # a CLI or Prefect run each: the full suite only

REPO = Path(__file__).resolve().parents[2]
PAUSED_CLI = Path(__file__).with_name("paused_cli.py")
STEPS, CHUNK = 8, 4


def train_args(storage: Path, session: str, photos: Path, *extra: str) -> list[str]:
    return ["train", "--session", session, "--storage", str(storage), "--photos", str(photos),
            "--model", "tiny", "--steps", str(STEPS), "--chunk-steps", str(CHUNK),
            "--learning-rate", "1e-4", "--seed", "3", *extra]


def environment(api_url: str) -> dict:
    return {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": str(REPO)}


def run(api_url: str, cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=environment(api_url),
                          capture_output=True, text=True, timeout=300)


def run_with_sigterm(api_url: str, cwd: Path, at_step: int, args: list[str]) -> subprocess.CompletedProcess:
    """Start the CLI; send SIGTERM while its `at_step`th step is running."""
    marker = cwd / "in-step"
    process = subprocess.Popen([sys.executable, str(PAUSED_CLI), str(at_step), str(marker), "--", *args],
                               cwd=cwd, env=environment(api_url), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    return signal_when_paused(process, marker, timeout=120)


def committed_steps(session_dir: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in session_dir.glob("checkpoints/step-*/MANIFEST.json"))


def final_unet(session_dir: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(session_dir / "checkpoints" / f"step-{STEPS:06d}" / "weights.safetensors")


def flow_run_state(api_url: str, session: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[session])),
                                     sort=FlowRunSort.START_TIME_DESC, limit=1)
    return runs[0].state.name  # the latest run of the session


def test_a_sigterm_is_held_until_the_block_ends_then_reaches_the_previous_handler():
    received = []
    previous = signal.signal(signal.SIGTERM, lambda *_: received.append("previous"))
    try:
        with stop_requests(grace_seconds=25) as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # the handler runs between bytecodes of the main thread
            assert stop.requested and received == []
            assert 24 < stop.remaining() <= 25
        assert received == ["previous"]
        assert signal.getsignal(signal.SIGTERM) is not None
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_through_prefect_commits_the_current_step_and_resumes_exactly(
        prefect_api_url, tmp_path, photos):
    reference = run(prefect_api_url, tmp_path, train_args(tmp_path / "ref", "pre", photos))
    assert reference.returncode == 0, reference.stderr[-3000:]

    storage = tmp_path / "sessions"
    stopped = run_with_sigterm(prefect_api_url, tmp_path, 6, train_args(storage, "pre", photos))
    assert stopped.returncode == -signal.SIGTERM, stopped.stderr[-3000:]
    assert "SIGTERM: stopping at step 6; committing a checkpoint first" in stopped.stderr
    assert committed_steps(storage / "pre") == [4, 6]
    assert flow_run_state(prefect_api_url, "pre") == "Crashed"

    resumed = run(prefect_api_url, tmp_path, train_args(storage, "pre", photos))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from committed checkpoint at step 6" in resumed.stderr
    ours, theirs = final_unet(storage / "pre"), final_unet(tmp_path / "ref" / "pre")
    assert [k for k in ours if not torch.equal(ours[k], theirs[k])] == []


def test_without_time_to_save_the_previous_checkpoint_stays_the_latest(prefect_api_url, tmp_path, photos):
    storage = tmp_path / "sessions"
    stopped = run_with_sigterm(prefect_api_url, tmp_path, 6,
                               train_args(storage, "nogr", photos, "--preemption-grace", "0"))
    assert stopped.returncode == -signal.SIGTERM, stopped.stderr[-3000:]
    assert "stopping at step 6 without a checkpoint" in stopped.stderr
    assert committed_steps(storage / "nogr") == [4]
