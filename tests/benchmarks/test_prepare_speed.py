"""The preparation benchmark runs anywhere (small photos here; no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "prepare_speed.py"


def test_benchmark_reports_both_times_the_ratio_and_the_pixel_difference():
    result = subprocess.run([sys.executable, str(SCRIPT), "--count", "4", "--width", "800", "--height", "600",
                             "--resolution", "128"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout)
    assert figures["plain_s"] > 0 and figures["ours_s"] > 0 and figures["speedup"] > 0
    assert figures["mean_abs_diff"] < 2
