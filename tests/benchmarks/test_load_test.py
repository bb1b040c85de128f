"""benchmarks/load_test.py in its small form: three sessions through a real Prefect server, the
local pool and `dreambooth worker`; the worker is drained (SIGTERM) while a run trains, a new one
started. Nothing is lost: every session completes with an uninterrupted run's weights, the drained
worker ended within its grace, its run was resumed, the queued runs bore their sessions' names,
and no automation acted on a finished run (minutes; `-m "not e2e"` skips it). Renders are left
out here (benchmarks/load_test.py runs them; test_automations.py reschedules a crashed one)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(2800)  # minutes on 2 quiet cores; over 25 on 2 cores at a load of 15
def test_three_sessions_survive_a_drained_worker(tmp_path):
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "load_test.py"), "--sessions", "3", "--steps", "4",
         "--chunk-steps", "2", "--stop", "term", "--no-restart", "--no-renders", "--timeout", "2400",
         "--json", str(report), "--keep", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=2700)
    assert report.exists(), result.stderr[-3000:]
    figures = json.loads(report.read_text())
    assert (figures["completed"], figures["weights_equal_uninterrupted"]) == (3, 3), json.dumps(figures)
    assert figures["worker_exit_status"] == 0  # all ended within its grace, nothing killed
    (resumed,) = figures["recovered"]
    assert resumed["running_again_after_seconds"] is not None
    assert figures["runs_named_for_their_session_after_upload"] == 3  # named while queued
    assert figures["automation_actions_failed"] == 0
    assert result.returncode == 0 and not figures["lost"]
