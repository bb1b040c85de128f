"""`dreambooth evaluate` on a trained tiny session: the report, the plot, the recommended step."""

import csv
import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from flows.cli import main

pytestmark = pytest.mark.slow  # a CLI training run: the full suite only

REPO = Path(__file__).resolve().parents[2]
FAST = ["--judges", "tiny", "--prompts", "2", "--images", "1", "--inference-steps", "2"]


@pytest.fixture(scope="module")
def session(prefect_api_url, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    assert main(["train", "--session", "s", "--storage", str(root), "--photos", str(REPO / "examples" / "photos"),
                 "--model", "tiny", "--steps", "6", "--chunk-steps", "2", "--sample-every", "0",
                 "--snapshot-every", "2", "--keep-snapshots", "5", "--learning-rate", "1e-3"]) == 0
    return root / "s"


def evaluate(session: Path, *flags: str) -> int:
    return main(["evaluate", "--session", session.name, "--storage", str(session.parent), *FAST, *flags])


def training_files(session: Path) -> dict[str, str]:
    return {p.relative_to(session).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in session.rglob("*") if p.is_file() and p.parts[len(session.parts)] in {"checkpoints", "snapshots"}}


def test_every_step_and_the_base_model_are_measured_and_one_is_recommended(session, capsys):
    before = training_files(session)
    assert evaluate(session) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader((session / "reports" / "evaluation.csv").open()))
    assert {(int(r["step"]), r["metric"]) for r in rows} == {
        (step, metric) for step in (0, 2, 4, 6) for metric in ("dino", "clip_i", "clip_t", "no_face")}
    assert {r["mean"] for r in rows if r["metric"] == "no_face"} == {"1.0"}  # a person; no face drawn
    assert {r["subject"] for r in rows} == {"shrk"}
    report = json.loads((session / "reports" / "evaluation.json").read_text())
    assert report["recommendation"]["step"] in (2, 4, 6)  # 2 only as a snapshot: read from it
    assert "Recommended: step" in out and "Rule: highest subject fidelity" in out
    assert Image.open(session / "reports" / "evaluation.png").size == (900, 450)
    assert training_files(session) == before  # evaluation reads the weights and changes nothing


def test_a_second_evaluation_with_the_same_settings_reuses_the_measured_steps(session, caplog):
    caplog.set_level("INFO", logger="dreambooth")
    assert evaluate(session, "--steps", "4", "--seed", "2") == 0  # new settings: measured afresh
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("Evaluating")] == [
        "Evaluating the base model", "Evaluating step 4"]
    first = (session / "reports" / "evaluation.csv").read_text()
    caplog.clear()
    assert evaluate(session, "--steps", "4", "--seed", "2") == 0
    assert not [r for r in caplog.records if r.getMessage().startswith("Evaluating")]
    assert (session / "reports" / "evaluation.csv").read_text() == first


def test_other_settings_measure_again(session):
    assert evaluate(session, "--steps", "6", "--seed", "1") == 0
    rows = list(csv.DictReader((session / "reports" / "evaluation.csv").open()))
    assert {int(r["step"]) for r in rows} == {0, 6}


def test_a_step_that_does_not_exist_is_named_before_anything_renders(session, capsys):
    assert evaluate(session, "--steps", "3") == 2
    assert "no checkpoint or snapshot at step 3" in capsys.readouterr().err


def test_steps_that_are_not_numbers_are_refused(session, capsys):
    assert evaluate(session, "--steps", "four") == 2
    assert "--steps 'four'" in capsys.readouterr().err
