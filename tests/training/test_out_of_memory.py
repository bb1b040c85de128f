"""CUDA out of memory: one paragraph of what to try, exit 2, the session intact and resumable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreambooth_core.config import MemoryPlan, RuntimeSettings, TrainingSettings
from dreambooth_core.training.memory.plan import out_of_memory_advice

REPO = Path(__file__).resolve().parents[2]
FAULT = Path(__file__).resolve().parent / "oom_fault"


def test_the_advice_names_the_concessions_not_made_yet_in_order():
    advice = out_of_memory_advice(TrainingSettings(), RuntimeSettings(), None, 512, 7)
    assert "at step 7 (dreambooth, 512 px, batch 1)" in advice
    order = ["--optimizer adamw-8bit", "--gradient-checkpointing", "--text-encoder-steps 0", "--method lora"]
    assert [advice.index(flag) for flag in order] == sorted(advice.index(flag) for flag in order)
    assert "--memory auto" in advice and "rerun the same command to resume" in advice
    made = out_of_memory_advice(TrainingSettings(method="lora", optimizer="adamw-8bit", text_encoder_steps=0),
                                RuntimeSettings(gradient_checkpointing=True), None, 512, 0)
    assert not any(flag in made for flag in order)


def test_after_an_auto_plan_the_advice_says_what_was_estimated():
    plan = MemoryPlan(optimizer="adamw-8bit", gradient_checkpointing=False,
                      estimated_peak_bytes=9 * 2**30, budget_bytes=13 * 2**30)
    advice = out_of_memory_advice(TrainingSettings(), RuntimeSettings(), plan, 512, 3)
    assert "chose 8-bit AdamW, estimated at 9.0 GiB of the 13.0 GiB" in advice and "nvidia-smi" in advice


def train(api_url: str, root: Path, oom_at: int | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": f"{FAULT}{os.pathsep}{REPO}"}
    env.pop("DREAMBOOTH_OOM_AT_STEP", None)
    if oom_at is not None:
        env["DREAMBOOTH_OOM_AT_STEP"] = str(oom_at)
    command = [sys.executable, "-m", "flows.cli", "train", "--session", "s", "--storage", str(root),
               "--model", "tiny", "--photos", str(REPO / "examples" / "photos"), "--steps", "8",
               "--chunk-steps", "4", "--sample-every", "0", "--device", "cpu"]
    return subprocess.run(command, cwd=root.parent, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # two CLI runs
def test_out_of_memory_ends_with_advice_and_exit_2_and_the_rerun_resumes(prefect_api_url, tmp_path):
    root = tmp_path / "sessions"
    failed = train(prefect_api_url, root, oom_at=6)
    assert failed.returncode == 2, failed.stderr[-3000:]
    error = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "ran out of memory at step 6" in error[0] and "--gradient-checkpointing" in error[0]
    assert "Traceback" not in failed.stderr
    manifest = root / "s" / "checkpoints" / "step-000004"
    assert manifest.is_dir() and not (root / "s" / "checkpoints" / "step-000008").exists()

    # the plan as sessions recorded it before base precision and offload existed: it resumes all the same
    recorded = json.loads((root / "s" / "session.json").read_text())
    assert {recorded["memory_plan"].pop(name) for name in ("base_precision", "offload")} == {"auto", False}
    (root / "s" / "session.json").write_text(json.dumps(recorded))

    resumed = train(prefect_api_url, root, oom_at=None)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from committed checkpoint at step 4" in resumed.stderr
    state = json.loads((root / "s" / "session.json").read_text())
    assert state["memory_plan"] == {"optimizer": "adamw", "gradient_checkpointing": False, "step_in_backward": False,
                                    "base_precision": "auto", "offload": False,
                                    "estimated_peak_bytes": None, "budget_bytes": None}
