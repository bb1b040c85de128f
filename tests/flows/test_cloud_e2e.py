"""End to end, as in production but on one machine (slow: a few minutes; `-m "not e2e"` skips it).

`prefect server start`, a process work pool, `prefect deploy`, `dreambooth automations
apply`, a worker; `dreambooth upload` triggers training; the machine is killed mid-training
(SIGKILL of the worker and the flow run); the heartbeat automation marks the silent run
Crashed, the resume automation reschedules it, a new worker runs it; that run is then
preempted (SIGTERM to the flow run's process): it ends Crashed, is rescheduled again and
finally completes with the weights of an uninterrupted run.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import safetensors.torch
import torch

REPO = Path(__file__).resolve().parents[2]
STEPS, CHUNK = 12, 2
SETTINGS = ["--model", "tiny", "--steps", str(STEPS), "--chunk-steps", str(CHUNK),
            "--learning-rate", "1e-4", "--seed", "11"]
HEARTBEAT, HEARTBEAT_TIMEOUT = 30, 45  # the smallest heartbeat Prefect allows

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, seconds: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def kill_machine(process: subprocess.Popen) -> None:
    """SIGKILL the worker and everything it started (flow runs get their own process group)."""
    root = psutil.Process(process.pid)
    groups = {os.getpgid(p.pid) for p in [root, *root.children(recursive=True)]}
    for group in groups:
        os.killpg(group, signal.SIGKILL)
    process.wait(timeout=30)


def preempt(worker: subprocess.Popen) -> None:
    """SIGTERM to the flow run's process, as a VM being reclaimed sends it."""
    (engine,) = [p for p in psutil.Process(worker.pid).children(recursive=True)
                 if "prefect.engine" in " ".join(p.cmdline())]
    engine.send_signal(signal.SIGTERM)
    engine.wait(timeout=60)


@pytest.fixture
def machine(tmp_path):
    """Environment of a Prefect server started for this test, and a way to run commands."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(REPO),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "DREAMBOOTH_HOME": str(REPO),
           "PREFECT_CLI_PROMPT": "false", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT),
           "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "0"}
    processes: list[subprocess.Popen] = []

    def start(*args: str, log: str) -> subprocess.Popen:
        process = subprocess.Popen(list(args), env=env, cwd=REPO, start_new_session=True,
                                   stdout=open(tmp_path / log, "w"), stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(list(args), env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"{args}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result

    start(sys.executable, "-m", "prefect", "server", "start", "--port", str(port), log="server.log")
    wait_until(lambda: _healthy(env["PREFECT_API_URL"]), 120, "the Prefect server")
    yield env, start, run
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def deployment_runs(api_url: str) -> list[dict]:
    runs = httpx.post(f"{api_url}/flow_runs/filter", json={}, timeout=10).json()
    return [r for r in runs if r["deployment_id"]]


def state_history(api_url: str, run_id: str) -> list[str]:
    states = httpx.get(f"{api_url}/flow_run_states/", params={"flow_run_id": run_id}, timeout=10).json()
    return [s["name"] for s in sorted(states, key=lambda s: s["timestamp"])]


def unet(session: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(session / "checkpoints" / f"step-{STEPS:06d}" / "weights.safetensors")


def test_an_uploaded_session_trains_through_a_killed_machine_to_the_uninterrupted_model(
        machine, tmp_path, photos):
    env, start, run = machine
    api = env["PREFECT_API_URL"]
    py = sys.executable
    run(py, "-m", "flows.cli", "train", "--session", "e2e", "--storage", str(tmp_path / "reference"),
        "--photos", str(photos), *SETTINGS)

    run(py, "-m", "prefect", "work-pool", "create", "local-process", "--type", "process")
    subprocess.run([py, "-m", "prefect", "deploy", "--name", "local"], env=env, cwd=REPO,
                   check=True, capture_output=True, timeout=300)
    run(py, "-m", "flows.cli", "automations", "apply", "--max-attempts", "3",
        "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT))
    worker = start(py, "-m", "prefect", "worker", "start", "--pool", "local-process", log="worker1.log")

    storage = tmp_path / "sessions"
    run(py, "-m", "flows.cli", "upload", "--session", "e2e", "--photos", str(photos),
        "--storage", str(storage), *SETTINGS)
    session = storage / "e2e"
    first = session / "checkpoints" / f"step-{CHUNK:06d}" / "MANIFEST.json"
    wait_until(first.exists, 300, "the first committed checkpoint")
    kill_machine(worker)
    assert not (session / "checkpoints" / f"step-{STEPS:06d}").exists(), "killed too late"

    (flow_run,) = deployment_runs(api)
    assert flow_run["state"]["name"] == "Running"  # nobody is left to say otherwise
    worker = start(py, "-m", "prefect", "worker", "start", "--pool", "local-process", log="worker2.log")
    later = session / "checkpoints" / f"step-{3 * CHUNK:06d}" / "MANIFEST.json"
    wait_until(later.exists, 300, "a checkpoint committed by the rescheduled run")
    preempt(worker)
    assert not (session / "checkpoints" / f"step-{STEPS:06d}").exists(), "preempted too late"
    final = wait_until(lambda: (r := deployment_runs(api)[0])["state"]["type"] in
                       {"COMPLETED", "FAILED", "CANCELLED"} and r, 600, "the rescheduled run", poll=2)

    log = (tmp_path / "worker2.log").read_text()
    assert final["state"]["name"] == "Completed", log[-3000:]
    assert final["run_count"] == 3
    assert log.count("Resuming from committed checkpoint at step") >= 2
    history = state_history(api, flow_run["id"])
    # (the engine and the worker may both report a crash: repeats collapse)
    transitions = [name for name in history if name in ("Crashed", "AwaitingRetry")]
    assert [n for i, n in enumerate(transitions) if transitions[i - 1:i] != [n]] == [
        "Crashed", "AwaitingRetry", "Crashed", "AwaitingRetry"], history
    assert "Execution was aborted by a termination signal." in [
        s["message"] for s in httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": flow_run["id"]}).json()]
    ours, reference = unet(session), unet(tmp_path / "reference" / "e2e")
    assert ours.keys() == reference.keys()
    assert [k for k in ours if not torch.equal(ours[k], reference[k])] == []
