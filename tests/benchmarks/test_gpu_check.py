"""The GPU check runs on a CPU with the tiny model, as CI runs it: the same table, with
what needs a GPU marked skipped and why."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
# diffusers' train_dreambooth.py needs torchvision and a diffusers checkout, which this suite
# has not: a script taking its arguments and drawing its progress bars with tqdm stands in.
STAND_IN = """import argparse, pathlib, time
from tqdm.auto import tqdm
parser = argparse.ArgumentParser()
for name in ("pretrained_model_name_or_path", "instance_data_dir", "instance_prompt", "output_dir", "resolution",
             "train_batch_size", "max_train_steps", "checkpointing_steps", "seed", "mixed_precision",
             "class_data_dir", "class_prompt", "num_class_images"):
    parser.add_argument("--" + name, required=True)
parser.add_argument("--train_text_encoder", action="store_true")
parser.add_argument("--with_prior_preservation", action="store_true")
args = parser.parse_args()
assert (pathlib.Path(args.pretrained_model_name_or_path) / "unet" / "config.json").is_file()
assert len(list(pathlib.Path(args.class_data_dir).iterdir())) == int(args.num_class_images)
assert args.train_text_encoder and args.with_prior_preservation and args.mixed_precision == "no"
for _ in tqdm(range(int(args.max_train_steps)), desc="Steps"):
    time.sleep(0.1)
for _ in tqdm(range(7), desc="Loading pipeline components..."):  # the save at the end: not training
    pass
"""


@pytest.mark.slow  # the whole check on the tiny model (about 30 s)
def test_gpu_check_on_a_cpu_prints_speed_estimates_a_profile_and_what_it_skipped(tmp_path):
    out, reference = tmp_path / "check.json", tmp_path / "train_dreambooth.py"
    reference.write_text(STAND_IN)
    result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--model", "tiny", "--json", str(out),
                             "--reference", str(reference)], capture_output=True, text=True, timeout=300)
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
    in_backward = rows["it/s", "defaults, --step-in-backward"]
    # estimated with its own settings (on the tiny model activations, not gradients, set the peak)
    assert in_backward["it_per_s"] > 0 and 0 < in_backward["estimate_gib"] <= rows["it/s", "defaults, plain"]["estimate_gib"]
    plans = [row for (check, _), row in rows.items() if check == "--memory auto plan"]
    assert [row["setting"] for row in plans] == ["limit 16 GB, prior", "limit 24 GB, prior"]
    assert all(row["note"] == "no concessions" and 0 < row["estimate_gib"] < 1 for row in plans)  # tiny fits
    tests = next(row for (check, _), row in rows.items() if check == "pytest -m gpu")
    assert "skipped: no CUDA device" in tests["note"] and "tests/training/test_trainer_resume.py" in tests["note"]
    assert "torch.profiler, one default step, top 10" in result.stdout and "Self CPU" in result.stdout
    side_by_side = rows["reference", "prior, train_dreambooth.py"]
    assert 3 < side_by_side["it_per_s"] < 11  # its Steps bar at about 10 it/s, not the loading bar after it
    ratio = rows["it/s", "prior, plain"]["it_per_s"] / side_by_side["it_per_s"]
    assert f"ours (prior, plain) / reference = {ratio:.2f}" in side_by_side["note"]


def test_a_missing_reference_script_is_named():
    result = subprocess.run([sys.executable, str(SCRIPT), "--reference", "/no/such/train_dreambooth.py"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "/no/such/train_dreambooth.py: no such file" in result.stderr
