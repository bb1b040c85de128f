"""`dreambooth automations apply`: the automations that reschedule crashed training runs,
checked on a real Prefect server (its trigger and action services do the work)."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from flows.automations import FLOW_NAME, FLOW_NAMES, MARK_SILENT, RESUME

pytestmark = pytest.mark.slow  # a CLI or Prefect run each: the full suite only

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


def wait_for_state(client, run_id, name: str, seconds: float) -> str:
    """Poll until the run is in state `name`; return the state it is in at the end."""
    deadline = time.monotonic() + seconds
    while True:
        state = client.read_flow_run(run_id).state.name
        if state == name or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


@pytest.fixture(params=[FLOW_NAME])
def deployment_run(request, prefect_api_url, applied):
    """A flow run of a training deployment (or of the flow named by the test's parameter), and
    automations that wait 10 s (the least Prefect allows) for a cancellation."""
    from prefect.client.orchestration import get_client

    from flows.automations import apply_automations

    apply_automations(max_attempts=2, heartbeat_timeout=300, settle_seconds=10)
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(request.param)
        deployment_id = client.create_deployment(flow_id=flow_id, name=f"run-{uuid.uuid4().hex[:6]}",
                                                 entrypoint="flows/dreambooth.py:dreambooth_train")
        yield client, client.create_flow_run_from_deployment(deployment_id).id


@pytest.mark.parametrize("deployment_run", FLOW_NAMES, indirect=True)  # training, and a render
def test_a_crashed_run_is_rescheduled_until_the_attempt_cap(deployment_run):
    from prefect.states import Crashed, Running

    client, run_id = deployment_run
    # attempt 1 crashes: rescheduled; attempt 2 crashes: the cap (2 attempts) is reached
    for attempt, expected, wait in ((1, "AwaitingRetry", 60), (2, "Crashed", 20)):
        client.set_flow_run_state(run_id, Running(), force=True)
        client.set_flow_run_state(run_id, Crashed(message="worker lost"), force=True)
        assert client.read_flow_run(run_id).run_count == attempt
        assert wait_for_state(client, run_id, "AwaitingRetry", wait) == expected


def test_a_run_cancelled_by_its_user_is_not_rescheduled(deployment_run):
    """Cancelling a run kills its process: the engine reports Crashed, then the worker Cancelled."""
    from prefect.states import Cancelled, Cancelling, Crashed, Running

    client, run_id = deployment_run
    for state in (Running(), Cancelling(), Crashed(message="terminated"), Cancelled()):
        client.set_flow_run_state(run_id, state, force=True)
    assert wait_for_state(client, run_id, "AwaitingRetry", 20) == "Cancelled"
