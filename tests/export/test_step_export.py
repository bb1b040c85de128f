"""`dreambooth export --step N`: any committed checkpoint or snapshot, exported without training."""

from pathlib import Path

import pytest
import safetensors.torch
import torch
from sessions import opened_session

from flows.cli import main

REPO = Path(__file__).resolve().parents[2]
# Checkpoints at 4 and 6 are kept (the newest two); step 2 survives only as a snapshot.
STEPS, CHUNK, SNAPSHOT_EVERY = 6, 2, 2
METHODS = {
    "dreambooth": [],
    "lora": ["--method", "lora", "--lora-text-encoder", "--text-encoder-steps", "6", "--lora-rank", "4"],
    "textual-inversion": ["--method", "textual-inversion", "--token", "zwx", "--learning-rate", "1e-2"],
}
# The same on SDXL (the later --model wins): adapters on both encoders, clip_l / clip_g embeddings.
METHODS |= {f"sdxl-{method}": ["--model", "tiny-sdxl", *METHODS[method]] for method in ("lora", "textual-inversion")}


@pytest.fixture(scope="module", params=list(METHODS))
def trained(request, prefect_api_url, tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp(f"step-export-{request.param}")
    assert main(["train", "--session", "s", "--storage", str(root), "--photos", str(REPO / "examples" / "photos"),
                 "--model", "tiny", "--steps", str(STEPS), "--chunk-steps", str(CHUNK), "--sample-every", "0",
                 "--snapshot-every", str(SNAPSHOT_EVERY), "--keep-snapshots", "5", "--learning-rate", "1e-3",
                 "--export-precision", "fp32", *METHODS[request.param]]) == 0
    return request.param.removeprefix("sdxl-"), root / "s"


def export(session: Path, step: int, *flags: str) -> int:
    return main(["export", "--session", session.name, "--storage", str(session.parent), "--step", str(step),
                 *flags])


def main_file(method: str, folder: Path, name: str) -> Path:
    """The file users load: the single file, the kohya LoRA, or the embedding."""
    return folder / (f"{name}.safetensors" if method != "textual-inversion" else "zwx.safetensors")


@pytest.mark.slow
def test_the_last_checkpoint_exports_the_files_of_the_final_export(trained):
    method, session = trained
    assert export(session, STEPS) == 0
    folder = session / "exports" / f"step-{STEPS:06d}"
    final = safetensors.torch.load_file(main_file(method, session, "s"))
    exported = safetensors.torch.load_file(main_file(method, folder, f"s-step-{STEPS:06d}"))
    assert final.keys() == exported.keys()
    assert all(torch.equal(final[k], exported[k]) for k in final)
    assert all(t.dtype == torch.float32 for t in exported.values() if t.is_floating_point())
    names = {p.name.replace(f"-step-{STEPS:06d}", "") for p in folder.iterdir()}
    assert names == {p.name for p in session.iterdir() if p.suffix in {".safetensors", ".ckpt", ".pt"}
                     or p.name in {"diffusers", "s-diffusers", "zwx-diffusers"}}


@pytest.mark.slow
def test_a_step_kept_only_as_a_snapshot_exports_the_snapshot_weights(trained, capsys):
    method, session = trained
    assert not (session / "checkpoints" / "step-000002").exists()
    assert export(session, 2, "--export-precision", "fp16") == 0
    assert "from its snapshot (fp16)" in capsys.readouterr().out
    snapshot = safetensors.torch.load_file(main_file(method, session / "snapshots" / "step-000002", "s-step-000002"))
    exported = safetensors.torch.load_file(main_file(method, session / "exports" / "step-000002", "s-step-000002"))
    trained_keys = [k for k in snapshot if not k.startswith("first_stage_model.")]  # the VAE is the base model's
    assert trained_keys and set(trained_keys) <= exported.keys()
    assert all(torch.equal(snapshot[k], exported[k]) for k in trained_keys)
    step_four = safetensors.torch.load_file(main_file(method, session / "snapshots" / "step-000004", "s-step-000004"))
    assert any(not torch.equal(step_four[k], exported[k]) for k in trained_keys)  # another step, other weights
    if method == "dreambooth":
        assert (session / "exports" / "step-000002" / "diffusers" / "model_index.json").exists()
    if method == "lora":
        assert (session / "exports" / "step-000002" / "s-step-000002-diffusers").is_dir()


@pytest.mark.slow
def test_exporting_a_step_again_replaces_it_and_keeps_the_final_outputs(trained):
    method, session = trained
    final = main_file(method, session, "s")
    before = final.read_bytes()
    assert export(session, 4, "--export-precision", "fp16") == 0
    assert export(session, 4, "--export-precision", "fp32") == 0
    tensors = safetensors.torch.load_file(main_file(method, session / "exports" / "step-000004", "s-step-000004"))
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float32}
    assert final.read_bytes() == before
    assert [p.name for p in (session / "exports").iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_a_step_that_does_not_exist_lists_the_steps_there_are(trained, capsys):
    _, session = trained
    assert export(session, 3) == 2
    error = capsys.readouterr().err
    assert "no checkpoint or snapshot at step 3" in error
    assert "2 (snapshot), 4 (checkpoint), 6 (checkpoint)" in error
    assert not (session / "exports" / "step-000003").exists()


def test_a_session_without_a_finished_chunk_says_to_train_first(tmp_path, capsys):
    opened_session(tmp_path, "fresh", model="tiny")
    assert main(["export", "--session", "fresh", "--storage", str(tmp_path), "--step", "10"]) == 2
    error = capsys.readouterr().err
    assert "has no committed checkpoint or snapshot yet" in error and "dreambooth train" in error


def test_an_unknown_session_is_named(tmp_path, capsys):
    assert main(["export", "--session", "nope", "--storage", str(tmp_path), "--step", "10"]) == 2
    assert "there is no session 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_status_lists_the_snapshots_and_the_exported_steps(trained, capsys):
    _, session = trained
    assert export(session, 2) == 0
    capsys.readouterr()
    assert main(["status", session.name, "--storage", str(session.parent)]) == 0
    out = capsys.readouterr().out
    assert "snapshots:   steps 2, 4, 6" in out
    assert "exported:    steps 2" in out
