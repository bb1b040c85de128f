"""A `dreambooth train` without PREFECT_API_URL runs its own Prefect server, which ends with the run
however the run ends: here the run is killed with SIGKILL (the process alone, not its group)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flows.temporary_server import configured_api_url

pytestmark = pytest.mark.slow  # a CLI run

REPO = Path(__file__).resolve().parents[2]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def is_running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_for(condition, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    return condition()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
def test_a_killed_run_leaves_no_server_behind(tmp_path, photos):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PYTHONPATH=str(REPO), PREFECT_HOME=str(tmp_path / "prefect"))
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", "train", "--session", "k", "--storage",
                            str(tmp_path / "sessions"), "--photos", str(photos), "--model", "tiny",
                            "--steps", "400"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def server_pid():
            # ours, or Prefect's own temporary server (python -m uvicorn ... prefect.server.api.server)
            return next((p for p in children(run.pid) if "flows.temporary_server" in command_line(p)
                         or "prefect.server.api.server" in command_line(p)), None)

        server = wait_for(server_pid, 60)
        assert server, "the run started no temporary server"
        words = command_line(server).split()
        port = int(words[words.index("--port") + 1] if "--port" in words else words[-1])
        assert wait_for(lambda: _answers(port), 60), "the temporary server never answered"
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        assert wait_for(lambda: not is_running(server), 20), f"server {server} outlived the killed run"
        assert not _answers(port)
    finally:
        run.kill()
        run.wait()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_configured_server_is_found_without_importing_prefect(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(tmp_path / "profiles.toml"))
    assert configured_api_url() is None  # no profiles file
    (tmp_path / "profiles.toml").write_text('active = "work"\n[profiles.work]\n'
                                            'PREFECT_API_URL = "http://prefect.internal:4200/api"\n')
    assert configured_api_url() == "http://prefect.internal:4200/api"
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert configured_api_url() == "http://127.0.0.1:4200/api"


def test_the_wait_for_the_server_does_the_work_given_and_stops_when_it_answers(tmp_path, monkeypatch):
    """The run imports its model classes while the server starts: the wait goes through them step
    by step and returns once the server answers, however much work is left."""
    import itertools

    from flows.temporary_server import TemporaryServer

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    steps = itertools.count()
    server = TemporaryServer()
    try:
        server.wait_ready(meanwhile=(time.sleep(0.05) or step for step in steps))
        assert _answers(server.port)
    finally:
        server.stop()
    assert next(steps) > 5  # work was done during the wait, and an endless supply did not hold it up


def test_library_chatter_is_quieted_when_the_libraries_are_imported():
    """Nothing imports diffusers or transformers to quiet them (seconds a rerun need not spend);
    each is quieted as it is first imported."""
    code = ("import sys\n"
            "from flows.quiet_libraries import quiet_libraries\n"
            "quiet_libraries()\n"
            "assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules\n"
            "from diffusers.utils import logging as d\n"
            "from transformers.utils import logging as t\n"
            "print(d.get_verbosity(), t.get_verbosity(), d.is_progress_bar_enabled(), t.is_progress_bar_enabled())\n")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["40", "40", "False", "False"]  # logging.ERROR, no progress bars


STEPS, CHUNK = 12, 4


def train_command(storage: Path, photos: Path) -> list[str]:
    return ["train", "--session", "s", "--storage", str(storage), "--photos", str(photos), "--model", "tiny",
            "--steps", str(STEPS), "--chunk-steps", str(CHUNK), "--learning-rate", "1e-4", "--seed", "7"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
def test_a_run_whose_server_dies_trains_on_to_the_same_model(prefect_api_url, tmp_path, photos):
    """The run's temporary server is killed (as by the out-of-memory killer) once the first chunk
    has committed: the run trains on, ends as usual with the model an uninterrupted run makes,
    says once that the UI is lost, and that the UI lost the run's end."""
    import safetensors.torch
    import torch
    from run_cli import run_cli

    reference = run_cli(prefect_api_url, *train_command(tmp_path / "reference", photos), timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PYTHONPATH=str(REPO), PREFECT_HOME=str(tmp_path / "prefect"))
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", *train_command(tmp_path / "sessions", photos)],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        server = wait_for(lambda: next((p for p in children(run.pid)
                                        if "flows.temporary_server" in command_line(p)), None), 120)
        assert server, "the run started no temporary server"
        first = tmp_path / "sessions" / "s" / "checkpoints" / f"step-{CHUNK:06d}" / "MANIFEST.json"
        assert wait_for(lambda: first.exists() or run.poll() is not None, 240) and run.poll() is None, \
            "the run ended before its first checkpoint"
        os.kill(server, signal.SIGKILL)  # the server alone, as the out-of-memory killer would
        stdout, stderr = run.communicate(timeout=300)  # a hung run fails here
    finally:
        run.kill()
        run.wait()

    assert run.returncode == 0, stderr[-3000:]
    assert f"trained to step {STEPS}" in stdout
    assert stderr.count("stopped answering") == 1, stderr[-3000:]  # one warning
    assert "the Prefect UI lost this run's end" in stderr
    assert "Traceback" not in stderr, stderr[-3000:]

    def weights(storage: Path) -> dict[str, torch.Tensor]:
        return safetensors.torch.load_file(storage / "s" / "checkpoints" / f"step-{STEPS:06d}"
                                           / "weights.safetensors")
    trained, uninterrupted = weights(tmp_path / "sessions"), weights(tmp_path / "reference")
    assert trained.keys() == uninterrupted.keys()
    assert all(torch.equal(trained[k], uninterrupted[k]) for k in trained)
    exported, reference_export = ((tmp_path / storage / "s" / "s.safetensors").read_bytes()
                                  for storage in ("sessions", "reference"))
    assert exported == reference_export
