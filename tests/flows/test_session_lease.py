"""Two runs of the same session at once, as two real processes: only one trains."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import LEASE_FILE

pytestmark = pytest.mark.slow  # a CLI or Prefect run each: the full suite only

REPO = Path(__file__).resolve().parents[2]


def start(api_url, cwd: Path, name: str, *args) -> subprocess.Popen:
    """The CLI in a process of its own; its output goes to cwd/<name>.out and .log."""
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": str(REPO)}
    with open(cwd / f"{name}.out", "w") as out, open(cwd / f"{name}.log", "w") as log:
        return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env,
                                stdout=out, stderr=log)


def output(cwd: Path, name: str) -> tuple[str, str]:
    return (cwd / f"{name}.out").read_text(), (cwd / f"{name}.log").read_text()


def train_args(storage, photos, steps, *extra):
    return ["train", "--session", "shrk", "--storage", storage, "--photos", str(photos), "--model", "tiny",
            "--steps", str(steps), "--chunk-steps", str(steps), *extra]


def wait_for_lease(storage: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the first run ended early"
        session = Session(storage, "shrk")
        session.fs.invalidate_cache()
        if session.exists(LEASE_FILE):
            return
        time.sleep(0.5)
    raise AssertionError("the first run never took the lease")


def wait_for_text(log: Path, text: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)


@pytest.fixture(params=["local", "gcs"])
def storage(request, tmp_path):
    return str(tmp_path / "sessions") if request.param == "local" else f"{request.getfixturevalue('gcs_bucket')}/sessions"


def test_a_second_run_refuses_or_waits_while_the_first_trains(prefect_api_url, storage, tmp_path, photos):
    first = start(prefect_api_url, tmp_path, "first", *train_args(storage, photos, 100000))  # for hours
    try:
        wait_for_lease(storage, first)
        refused = start(prefect_api_url, tmp_path, "refused", *train_args(storage, photos, 8))
        refused.wait(timeout=300)
        _, log = output(tmp_path, "refused")
        assert refused.returncode == 2, log[-3000:]
        assert "error: session 'shrk'" in log and "is being trained by another run" in log
        assert f"process {first.pid} on" in log and "lease expires at" in log
        assert "Traceback" not in log

        waiting = start(prefect_api_url, tmp_path, "waiting", *train_args(storage, photos, 8, "--lease-wait", "300"))
        wait_for_text(tmp_path / "waiting.log", "is held by", waiting)  # it waits for the first run
        first.kill()  # the first run's machine dies: its lease is left behind
        first.wait()
        waiting.wait(timeout=300)
        out, log = output(tmp_path, "waiting")
        assert waiting.returncode == 0, log[-3000:]
        assert "is held by" in log and "Took over session shrk" in log
        assert "Done: session 'shrk' trained to step 8" in out
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    session = Session(storage, "shrk")
    session.fs.invalidate_cache()
    assert session.exists("shrk.safetensors")
    assert not session.exists(LEASE_FILE), "the lease was not released when the run ended"
