"""The memory-estimate benchmark runs on a CPU for the full SD 1.5 architecture (no timing asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_estimate.py"


@pytest.mark.slow  # the full-size architecture, if only on fake tensors
def test_full_sd15_dreambooth_needs_weights_gradients_and_adamw_moments():
    # "UNet only": the name earlier BENCHMARKS.md sections ran with, still accepted
    result = subprocess.run([sys.executable, str(SCRIPT), "--models", "sd15", "--plans",
                             "dreambooth, UNet only, prior", "textual inversion"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ")]
    header = [cell.strip().split(" (")[0] for cell in lines[0]]
    rows = [dict(zip(header, (cell.strip() for cell in cells))) for cells in lines[1:]]
    peaks = {row["plan"]: float(row["peak GiB"]) for row in rows}
    assert {row["resolution"] for row in rows} == {"512 px (native)"}
    # 860 M UNet parameters: fp32 weights + gradients + two AdamW moments = 12.8 GiB at least
    assert 12.8 < peaks["dreambooth, denoiser only, prior"] < 20
    assert peaks["textual inversion"] < peaks["dreambooth, denoiser only, prior"] / 1.5
