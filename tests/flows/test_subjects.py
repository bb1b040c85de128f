"""Several subjects in one session, token verdicts in the flow, and `dreambooth tokens`."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from flows.cli import EXIT_USER_ERROR, main

pytestmark = pytest.mark.slow  # a CLI or Prefect run each: the full suite only

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "photos"


def two_subjects(folder: Path) -> Path:
    """shrk: the example photos by file name; ohwx/: two of them in a folder named after the token.
    Each subject gets a mirrored third photo: the photo check refuses fewer than 3 per subject."""
    shutil.copytree(EXAMPLES, folder)
    (folder / "ohwx").mkdir()
    for n in (1, 2):
        shutil.move(folder / f"shrk ({n}).jpg", folder / "ohwx" / f"IMG_{n}.jpg")
    (folder / "ohwx" / "IMG_1.txt").write_text("a dog lying in the sun")
    for source, mirror in (("ohwx/IMG_1.jpg", "ohwx/IMG_3.jpg"), ("shrk (3).jpg", "shrk (5).jpg")):
        Image.open(folder / source).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / mirror)
    return folder


def markdown_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return artifacts[0].data


def test_a_session_with_two_subjects_trains_and_reports_both(prefect_api_url, tmp_path):
    photos = two_subjects(tmp_path / "photos")
    assert main(["train", "--session", "duo", "--storage", str(tmp_path / "sessions"), "--model", "tiny",
                 "--photos", str(photos), "--class-word", "shrk=man,ohwx=dog", "--steps", "4",
                 "--chunk-steps", "4", "--class-images", "4"]) == 0  # prior preservation: 4 per subject, not 200
    session = tmp_path / "sessions" / "duo"
    manifest = json.loads((session / "dataset" / "manifest.json").read_text())
    assert sorted((i["token"], i["caption"]) for i in manifest["items"]) == [
        ("ohwx", "a ohwx dog lying in the sun"), ("ohwx", "photo of ohwx dog"), ("ohwx", "photo of ohwx dog"),
        ("shrk", "photo of shrk man"), ("shrk", "photo of shrk man"), ("shrk", "photo of shrk man")]
    assert {t: s["class_prompt"] for t, s in manifest["subjects"].items()} == {
        "ohwx": "photo of dog", "shrk": "photo of man"}
    report = json.loads((session / "reports" / "tokens.json").read_text())
    verdicts = {"ohwx": "risky", "shrk": "good"}  # the tiny tokenizer splits ohwx into 4 tokens
    assert {s["token"]: s["analysis"]["verdict"] for s in report["subjects"]} == verdicts
    markdown = (session / "reports" / "tokens.md").read_text()
    assert "## ohwx" in markdown and "## shrk" in markdown
    assert markdown_artifact("tokens-duo") == markdown
    captions = (session / "reports" / "captions.md").read_text()  # SD 1.x: the instance prompt by default
    assert markdown_artifact("captions-duo") == captions and "--captions token" in captions
    assert captions.count("](data:image/jpeg;base64,") == 6 and "a ohwx dog lying in the sun" in captions
    assert (session / "photos" / "ohwx" / "IMG_1.txt").is_file()
    assert (session / "duo.safetensors").is_file()
    assert json.loads((session / "session.json").read_text())["token_verdicts"] == verdicts


def test_a_bad_token_stops_before_training_unless_told_to_warn(prefect_api_url, tmp_path, photos, capsys):
    for photo in photos.iterdir():
        photo.rename(photo.with_name(photo.name.replace("shrk", "sks")))
    args = ["train", "--session", "rifle", "--storage", str(tmp_path / "sessions"), "--model", "tiny",
            "--photos", str(photos), "--steps", "2"]
    assert main(args) == EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert "sks (1).jpg, sks (2).jpg, sks (3).jpg and 1 more: the token 'sks' is bad" in error
    assert "Rarer identifiers: " in error and "--bad-token warn" in error
    assert not (tmp_path / "sessions" / "rifle" / "checkpoints").exists()
    assert main(args + ["--bad-token", "warn"]) == 0


def test_tokens_command_judges_a_word_with_the_model_tokenizer(capsys):
    assert main(["tokens", "budidoremi", "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "- verdict: bad: the model already knows 'do'" in out
    assert "- splits into 9 token(s): b u d i do r e m i</w>" in out
    assert "Rare identifiers for this model: " in out
    assert main(["tokens", "shrk", "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "- verdict: good" in out and "Rare identifiers" not in out
    assert main(["tokens", "--suggest", "--model", "tiny"]) == 0
    suggested = capsys.readouterr().out.split(": ", 1)[1].strip().split(", ")
    assert len(suggested) == 5


def test_tokens_command_judges_with_both_sdxl_tokenizers(capsys):
    assert main(["tokens", "shrk", "--model", "tiny-sdxl"]) == 0
    out = capsys.readouterr().out
    assert "shrk (tiny-sdxl tokenizer/, first text encoder)" in out
    assert "shrk (tiny-sdxl tokenizer_2/, second text encoder)" in out
    assert out.count("- verdict: good") == 2


@pytest.mark.parametrize("model", ["tiny", "tiny-sdxl"])
def test_two_subjects_resume_to_exactly_the_uninterrupted_model(model, prefect_api_url, tmp_path):
    import safetensors.torch
    import torch

    photos = two_subjects(tmp_path / "photos")

    def train(storage: str, steps: int) -> None:
        assert main(["train", "--session", "duo", "--storage", str(tmp_path / storage), "--model", model,
                     "--photos", str(photos), "--steps", str(steps), "--chunk-steps", "3",
                     "--learning-rate", "1e-4"]) == 0

    train("whole", 6)
    train("resumed", 3)
    train("resumed", 6)  # continues from the committed checkpoint at step 3
    whole, resumed = (safetensors.torch.load_file(tmp_path / s / "duo" / "checkpoints" / "step-000006" /
                                                  "weights.safetensors") for s in ("whole", "resumed"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    report = json.loads((tmp_path / "whole" / "duo" / "reports" / "tokens.json").read_text())
    judged = {s["token"]: sorted(s["per_tokenizer"]) for s in report["subjects"]}
    assert judged == {t: ["tokenizer", "tokenizer_2"] if model == "tiny-sdxl" else [] for t in ("ohwx", "shrk")}
