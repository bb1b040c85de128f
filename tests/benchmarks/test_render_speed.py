"""The rendering benchmark runs anywhere (the tiny model here; no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "render_speed.py"


@pytest.mark.slow  # builds and renders the tiny model in a new interpreter (about 12 s)
def test_benchmark_reports_seconds_per_step_and_per_image():
    result = subprocess.run([sys.executable, str(SCRIPT), "--model", "tiny", "--steps", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout)
    assert figures["model"] == "tiny" and figures["resolution"] == 64
    assert figures["seconds_per_step"] > 0
    assert figures["seconds_per_image_25_steps"] > 25 * figures["seconds_per_step"] * 0.5
