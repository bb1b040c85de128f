"""The benchmark script runs anywhere with the tiny model on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_speed.py"


@pytest.mark.slow
def test_benchmark_reports_speed_memory_and_checkpoint_cost():
    result = subprocess.run([sys.executable, str(SCRIPT), "--model", "tiny", "--device", "cpu",
                             "--steps", "3", "--warmup", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout)
    assert figures["it_per_s"] > 0 and figures["ms_per_step"] > 0
    assert figures["checkpoint_gb"] > 0 and figures["checkpoint_save_s"] >= figures["checkpoint_copy_s"] >= 0
    assert 0 < figures["checkpoint_share_if_blocking"] < 1 and figures["write_hidden_by_next_chunk"]
    assert figures["peak_memory_gb"] > 0
