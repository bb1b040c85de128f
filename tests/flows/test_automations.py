"""`dreambooth automations apply`: the automations that reschedule crashed training runs,
checked on a real Prefect server (its trigger and action services do the work)."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from flows.automations import FLOW_NAME, MARK_SILENT, RESUME

REPO = Path(__file__).resolve().parents[2]


def cli(api_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def applied(prefect_api_url):
    result = cli(prefect_api_url, "automations", "apply", "--max-attempts", "2")
    assert result.returncode == 0, result.stderr
    return result


def automations_named(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_automations_by_name(name)


def test_applying_again_updates_the_same_two_automations(prefect_api_url, applied):
    assert applied.stdout.splitlines() == [f"created: {MARK_SILENT}", f"created: {RESUME}"]
    again = cli(prefect_api_url, "automations", "apply", "--max-attempts", "3",
                "--heartbeat-timeout", "300")
    assert again.stdout.splitlines() == [f"updated: {MARK_SILENT}", f"updated: {RESUME}"]
    (silent,), (resume,) = automations_named(MARK_SILENT), automations_named(RESUME)
    assert silent.trigger.within.total_seconds() == 300
    assert resume.trigger.match.model_dump()["prefect.run-count"] == ["0", "1", "2"]
    back = cli(prefect_api_url, "automations", "apply", "--max-attempts", "2")
    assert back.returncode == 0, back.stderr


def test_without_a_server_it_says_what_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    result = subprocess.run([sys.executable, "-m", "flows.cli", "automations", "apply"],
                            env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "set PREFECT_API_URL" in result.stderr and "Traceback" not in result.stderr


def wait_for_state(client, run_id, names: set[str], seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = client.read_flow_run(run_id).state
        if state.name in names:
            return state.name
        time.sleep(0.5)
    return state.name


def test_a_crashed_deployment_run_is_rescheduled_until_the_attempt_cap(prefect_api_url, applied):
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(FLOW_NAME)
        deployment_id = client.create_deployment(flow_id=flow_id, name=f"cap-{uuid.uuid4().hex[:6]}",
                                                 entrypoint="flows/dreambooth.py:dreambooth_train")
        run = client.create_flow_run_from_deployment(deployment_id)
        # attempt 1 crashes: rescheduled; attempt 2 crashes: the cap (2 attempts) is reached
        for attempt, expected in ((1, "AwaitingRetry"), (2, "Crashed")):
            client.set_flow_run_state(run.id, Running(), force=True)
            client.set_flow_run_state(run.id, Crashed(message="worker lost"), force=True)
            assert client.read_flow_run(run.id).run_count == attempt
            assert wait_for_state(client, run.id, {"AwaitingRetry"}, 20 if expected == "Crashed"
                                  else 60) == expected
