"""--gpus N: data-parallel training in N processes (gloo on the CPU here), resumed exactly."""

import os
import subprocess
import sys
from pathlib import Path

import safetensors.torch
import torch

REPO = Path(__file__).resolve().parents[2]
FAULT = Path(__file__).resolve().parent / "rank_fault"


def train(api_url, root: Path, kill_rank: str | None = None) -> subprocess.CompletedProcess:
    root.mkdir(exist_ok=True)
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": f"{FAULT}{os.pathsep}{REPO}"}
    env.pop("DREAMBOOTH_KILL_RANK", None)
    if kill_rank:
        env["DREAMBOOTH_KILL_RANK"] = kill_rank
    command = [sys.executable, "-m", "flows.cli", "train", "--session", "s", "--storage", str(root / "sessions"),
               "--model", "tiny", "--photos", str(REPO / "examples" / "photos"), "--steps", "8",
               "--chunk-steps", "4", "--gpus", "2", "--device", "cpu", "--batch-size", "2",
               "--learning-rate", "1e-4", "--sample-every", "0", "--seed", "4"]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)


def weights(root: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(root / "sessions" / "s" / "checkpoints" / "step-000008" / "weights.safetensors")


def test_a_crashed_process_resumes_to_the_uninterrupted_two_process_model(prefect_api_url, tmp_path):
    whole = train(prefect_api_url, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "on 2 processes" in whole.stderr

    crashed = train(prefect_api_url, tmp_path / "crashed", kill_rank="1:2")  # rank 1, step 5
    assert crashed.returncode != 0
    resumed = train(prefect_api_url, tmp_path / "crashed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from committed checkpoint at step 4" in resumed.stderr

    expected, actual = weights(tmp_path / "whole"), weights(tmp_path / "crashed")
    different = [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
