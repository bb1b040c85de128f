"""The start-up benchmark runs anywhere (a 2-step run here; no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "start_speed.py"


@pytest.mark.slow  # two CLI runs
def test_benchmark_reports_every_phase_of_a_short_run():
    result = subprocess.run([sys.executable, str(SCRIPT), "--runs", "1", "--steps", "2", "--chunk-steps", "1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    median = json.loads(result.stdout)["median_s"]
    assert set(median) == {"imports", "server_start", "checks", "training", "export", "end_to_end", "rerun"}
    assert all(median[phase] > 0 for phase in ("imports", "server_start", "training", "end_to_end", "rerun"))
    assert median["end_to_end"] > median["training"]
