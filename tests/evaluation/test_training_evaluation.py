"""--evaluate-every: the checkpoints measured while training, without changing training, resumed
exactly, and measured as `dreambooth evaluate` measures them afterwards."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
from run_cli import run_cli

from flows.cli import main

pytestmark = pytest.mark.slow  # CLI training runs: the full suite only

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "examples" / "photos"
STEPS = 6
SMALL = ["--evaluation-prompts", "2", "--evaluation-images", "1", "--evaluation-inference-steps", "2"]
EVALUATE_SMALL = ["--judges", "tiny", "--prompts", "2", "--images", "1", "--inference-steps", "2"]


def train_args(storage: Path, *extra: str) -> list[str]:
    """EMA on: the UNet renders with the averaged weights and must get its own back."""
    return ["train", "--session", "s", "--storage", str(storage), "--photos", str(PHOTOS), "--model", "tiny",
            "--steps", str(STEPS), "--chunk-steps", "2", "--sample-every", "0", "--learning-rate", "1e-3",
            "--ema-decay", "0.9", "--seed", "7", *extra]


def weights(session: Path, step: int = STEPS) -> dict[str, torch.Tensor]:
    folder = session / "checkpoints" / f"step-{step:06d}"
    return {f"{name}:{key}": value for name in ("weights", "ema")
            for key, value in safetensors.torch.load_file(folder / f"{name}.safetensors").items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def rows(session: Path) -> list[dict]:
    return list(csv.DictReader((session / "reports" / "evaluation.csv").open()))


@pytest.fixture(scope="module")
def without(prefect_api_url, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("without-evaluation")
    assert main(train_args(root)) == 0
    return root / "s"


@pytest.fixture(scope="module")
def evaluated(prefect_api_url, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("with-evaluation")
    assert main(train_args(root, "--evaluate-every", "1", *SMALL)) == 0
    return root / "s"


def test_evaluating_while_training_leaves_the_trained_weights_as_they_are(without, evaluated):
    assert_same(weights(evaluated), weights(without))
    assert (evaluated / "s.safetensors").read_bytes() == (without / "s.safetensors").read_bytes()
    assert (evaluated / "reports" / "loss.csv").read_text() == (without / "reports" / "loss.csv").read_text()
    assert not (without / "reports" / "evaluation.csv").exists()


def test_the_base_model_and_every_chunk_are_measured_with_a_recommended_step(evaluated):
    assert {(int(r["step"]), r["metric"]) for r in rows(evaluated)} == {
        (step, metric) for step in (0, 2, 4, 6) for metric in ("dino", "clip_i", "clip_t", "no_face")}
    # No class word: a person, so face identity is measured; the tiny model draws no face at all.
    assert {r["mean"] for r in rows(evaluated) if r["metric"] == "no_face"} == {"1.0"}
    report = json.loads((evaluated / "reports" / "evaluation.json").read_text())
    assert report["recommendation"]["step"] in (2, 4, 6)
    assert report["settings"]["judges"] == "tiny"  # auto: the tiny judges for the tiny model
    assert (evaluated / "reports" / "evaluation.png").stat().st_size > 0


def test_the_plot_and_the_recommendation_are_in_the_prefect_ui(evaluated, prefect_api_url):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        versions = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["evaluation-s"])))
    newest = max(versions, key=lambda a: a.created).data
    recommendation = json.loads((evaluated / "reports" / "evaluation.json").read_text())["recommendation"]
    assert "# Evaluation of session s" in newest and "Steps measured: 0, 2, 4, 6" in newest
    assert recommendation["reason"] in newest and recommendation["rule"] in newest
    assert "](data:image/jpeg;base64," in newest
    assert len(versions) >= 3  # one after each chunk


def test_dreambooth_evaluate_afterwards_measures_the_same_values(evaluated, tmp_path):
    """The checkpoint's weights (EMA applied) judged after training, against the trainer's own modules
    judged during it."""
    copy = tmp_path / "s"
    shutil.copytree(evaluated, copy)
    for name in ("evaluation.csv", "evaluation.json", "evaluation.png"):
        (copy / "reports" / name).unlink()
    assert main(["evaluate", "--session", "s", "--storage", str(tmp_path), "--steps", "4,6", *EVALUATE_SMALL]) == 0
    during = {(r["step"], r["metric"]): float(r["mean"]) for r in rows(evaluated) if r["step"] != "2"}
    after = {(r["step"], r["metric"]): float(r["mean"]) for r in rows(copy)}
    assert during.keys() == after.keys()
    assert all(abs(during[k] - after[k]) < 1e-4 for k in during), (during, after)


def test_a_killed_run_with_evaluation_resumes_to_the_same_weights_and_report(without, tmp_path, prefect_api_url):
    args = train_args(tmp_path, "--evaluate-every", "1", *SMALL)
    killed = run_cli(prefect_api_url, *args, kill_at="step:4")
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_cli(prefect_api_url, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from committed checkpoint at step 2" in resumed.stderr
    assert_same(weights(tmp_path / "s"), weights(without))
    assert {int(r["step"]) for r in rows(tmp_path / "s")} == {0, 2, 4, 6}


def test_renders_a_kill_cut_short_are_made_by_the_next_run_from_the_step_checkpoint(evaluated, tmp_path,
                                                                                  prefect_api_url):
    """Killed inside step 4's evaluation, then (another session) inside step 4's samples, each
    once the checkpoint is committed: the rerun finds step 4 trained and renders what is
    missing from its checkpoint, the same rows and the same grid an unbroken run makes."""
    both, samples_only = tmp_path / "both", tmp_path / "samples"
    evaluating = train_args(both, "--evaluate-every", "1", *SMALL, "--sample-every", "1")
    killed = run_cli(prefect_api_url, *evaluating, kill_at="evaluate:5")  # base: 1-2, step 2: 3-4
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert {int(r["step"]) for r in rows(both / "s")} == {0, 2}
    resumed = run_cli(prefect_api_url, *evaluating)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Step 4: its rows in reports/evaluation.csv missing" in resumed.stderr
    made_up = {(r["step"], r["metric"]): float(r["mean"]) for r in rows(both / "s")}
    unbroken = {(r["step"], r["metric"]): float(r["mean"]) for r in rows(evaluated)}
    assert made_up.keys() == unbroken.keys()
    assert all(abs(made_up[k] - unbroken[k]) < 1e-4 for k in unbroken), (made_up, unbroken)

    sampling = train_args(samples_only, "--sample-every", "1")
    killed = run_cli(prefect_api_url, *sampling, kill_at="sample:2")  # step 2's grid is render 1
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (samples_only / "s" / "samples" / "step-000004.png").exists()
    resumed = run_cli(prefect_api_url, *sampling)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Step 4: samples/step-000004.png missing" in resumed.stderr
    for step in (2, 4, 6):
        grid = f"samples/step-{step:06d}.png"
        assert (samples_only / "s" / grid).read_bytes() == (both / "s" / grid).read_bytes(), grid
