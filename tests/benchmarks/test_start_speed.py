"""The start-up benchmark runs anywhere (a 2-step run here; no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "start_speed.py"
# diffusers' train_dreambooth.py needs torchvision and a diffusers checkout, neither of which
# this suite has: a script taking its arguments stands in, to test the pairing.
STAND_IN = """import argparse, pathlib, time
parser = argparse.ArgumentParser()
for name in ("pretrained_model_name_or_path", "instance_data_dir", "instance_prompt", "output_dir",
             "resolution", "train_batch_size", "max_train_steps", "checkpointing_steps", "seed"):
    parser.add_argument("--" + name, required=True)
parser.add_argument("--train_text_encoder", action="store_true")
args = parser.parse_args()
assert (pathlib.Path(args.pretrained_model_name_or_path) / "model_index.json").is_file()
pathlib.Path(args.output_dir).mkdir()
time.sleep(1)  # a second: the rounding of the reported seconds stays small beside it
"""


@pytest.mark.slow  # six CLI runs
def test_benchmark_reports_every_phase_of_a_short_run_and_the_ratio(tmp_path):
    reference = tmp_path / "train_dreambooth.py"
    reference.write_text(STAND_IN)
    result = subprocess.run([sys.executable, str(SCRIPT), "--runs", "1", "--steps", "2", "--chunk-steps", "1",
                             "--resolution", "64", "--reference", str(reference)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    phases = report["phases_median_s"]
    assert set(phases) == {"to_flow", "checks", "model_load", "training", "export", "finish", "end_to_end",
                           "imports", "server_start"}
    assert all(seconds > 0 for seconds in phases.values())
    assert phases["end_to_end"] > phases["to_flow"] + phases["training"]
    assert report["rerun_median_s"] > 0 and report["first_run_s"] > 0
    assert report["paired_ratio_median"] == pytest.approx(report["ours_s"][0] / report["reference_s"][0], rel=0.02)


def test_a_missing_reference_script_is_named():
    result = subprocess.run([sys.executable, str(SCRIPT), "--reference", "/no/such/train_dreambooth.py"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "/no/such/train_dreambooth.py: no such file" in result.stderr
