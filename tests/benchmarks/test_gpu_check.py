"""The GPU check runs on a CPU with the tiny model, as CI runs it: the same table, with
what needs a GPU marked skipped and why."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow  # the whole check on the tiny model (about 30 s)
def test_gpu_check_on_a_cpu_prints_speed_estimates_a_profile_and_what_it_skipped(tmp_path):
    out = tmp_path / "check.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--model", "tiny", "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| check | setting | it/s | peak GiB | estimate GiB | note |" in result.stdout
    rows = {(r["check"], r["setting"]): r for r in json.loads(out.read_text())["rows"]}

    for workload in ("defaults", "prior"):
        for options in ("plain", "--channels-last"):
            row = rows["it/s", f"{workload}, {options}"]
            assert row["it_per_s"] > 0 and row["estimate_gib"] > 0
            assert row["peak_gib"] is None and "no GPU" in row["note"]
        assert "skipped on a CPU" in rows["it/s", f"{workload}, --compile --channels-last"]["note"]
    # prior preservation doubles the batch: more memory
    assert rows["it/s", "prior, plain"]["estimate_gib"] > rows["it/s", "defaults, plain"]["estimate_gib"]
    assert "needs a CUDA GPU" in rows["it/s", "defaults, --optimizer adamw-8bit"]["note"]
    plans = [row for (check, _), row in rows.items() if check == "--memory auto plan"]
    assert [row["setting"] for row in plans] == ["limit 16 GB, prior", "limit 24 GB, prior"]
    assert all(row["note"] == "no concessions" and 0 < row["estimate_gib"] < 1 for row in plans)  # tiny fits
    tests = next(row for (check, _), row in rows.items() if check == "pytest -m gpu")
    assert "skipped: no CUDA device" in tests["note"] and "tests/training/test_trainer_resume.py" in tests["note"]
    assert "torch.profiler, one default step, top 10" in result.stdout and "Self CPU" in result.stdout
