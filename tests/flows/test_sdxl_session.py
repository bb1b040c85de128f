"""An SDXL session through the CLI on the tiny SDXL: prior preservation, samples and snapshots on;
a killed run resumes to the uninterrupted model; the single file and the diffusers folder load in
diffusers' own SDXL pipeline with the trained weights; LoRA and embedding sessions' files load too."""

import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from run_cli import run_cli

from dreambooth_core.families.base_model import fetch_model
from flows.cli import main

pytestmark = pytest.mark.slow  # CLI training runs: the full suite only

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "examples" / "photos"


def train_args(storage: Path, *extra: str) -> list[str]:
    return ["train", "--session", "xl", "--storage", str(storage), "--photos", str(PHOTOS), "--model", "tiny-sdxl",
            "--steps", "6", "--chunk-steps", "2", "--class-word", "man", "--class-images", "2",
            "--text-encoder-steps", "4", "--flip", "--learning-rate", "1e-3", "--seed", "3",
            "--export-precision", "fp32", *extra]


def checkpoint_weights(session: Path, step: int = 6) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(session / "checkpoints" / f"step-{step:06d}" / "weights.safetensors")


@pytest.fixture(scope="module")
def reference(prefect_api_url, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sdxl")
    assert main(train_args(root, "--snapshot-every", "2")) == 0
    return root / "xl"


def test_both_text_encoders_and_the_unet_train(reference):
    weights = checkpoint_weights(reference)
    assert {name.split(".", 1)[0] for name in weights} == {"unet", "text_encoder", "text_encoder_2"}
    assert (reference / "samples" / "step-000006.png").is_file()
    assert (reference / "snapshots" / "step-000004" / "xl-step-000004.safetensors").is_file()


def test_the_single_file_and_the_diffusers_folder_load_in_diffusers_with_the_trained_weights(reference):
    from diffusers import StableDiffusionXLPipeline

    trained = checkpoint_weights(reference)
    config = reference / "diffusers"
    for pipeline in (StableDiffusionXLPipeline.from_pretrained(config),
                     StableDiffusionXLPipeline.from_single_file(str(reference / "xl.safetensors"), config=str(config),
                                                                local_files_only=True)):
        for part in ("unet", "text_encoder", "text_encoder_2"):
            state = getattr(pipeline, part).state_dict()
            mine = {k.removeprefix(f"{part}."): v for k, v in trained.items() if k.split(".", 1)[0] == part}
            different = [k for k, v in mine.items() if not torch.equal(state[k], v)]
            assert not different, f"{part}: {different[:3]}"
    metadata = safetensors.safe_open(str(reference / "xl.safetensors"), "pt").metadata()
    assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    pipeline.set_progress_bar_config(disable=True)
    (image,) = pipeline("photo of shrk man", num_inference_steps=2, height=64, width=64).images
    assert image.size == (64, 64)


def test_the_exported_single_file_is_a_base_model_for_a_new_session(reference, tmp_path, capsys):
    """Converted with diffusers' SDXL single-file loading, against the session's own diffusers folder."""
    assert main(["train", "--session", "again", "--storage", str(tmp_path), "--photos", str(PHOTOS),
                 "--model", str(reference / "xl.safetensors"), "--single-file-config", str(reference / "diffusers"),
                 "--steps", "2", "--chunk-steps", "2", "--sample-every", "0", "--text-encoder-steps", "0",
                 "--captions", "token"]) == 0  # a model file is not a tiny model: its captioner is the hub's
    assert "trained to step 2" in capsys.readouterr().out
    weights = checkpoint_weights(tmp_path / "again", 2)
    assert {name.split(".", 1)[0] for name in weights} == {"unet"}
    assert (tmp_path / "again" / "diffusers" / "text_encoder_2").is_dir()


def test_transformers_4_computes_from_the_diffusers_folder_what_transformers_5_does(reference, tmp_path):
    from export import output_loading as loading

    job = {"kind": "sdxl", "model": str(reference / "diffusers")}
    (old,) = loading.with_transformers4([job], tmp_path)["results"]
    new = loading.run(job)
    assert old["missing"] == [[], []]
    for name in ("ids", "text", "pooled", "unet"):
        torch.testing.assert_close(old[name], new[name], atol=1e-5, rtol=1e-5, msg=name)


def test_a_killed_run_resumes_to_the_uninterrupted_model(reference, tmp_path, prefect_api_url):
    args = train_args(tmp_path, "--snapshot-every", "2")
    killed = run_cli(prefect_api_url, *args, kill_at="step:4")
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_cli(prefect_api_url, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from committed checkpoint at step 2" in resumed.stderr
    expected, actual = checkpoint_weights(reference), checkpoint_weights(tmp_path / "xl")
    assert [k for k in expected if not torch.equal(expected[k], actual[k])] == []
    assert (tmp_path / "xl" / "xl.safetensors").read_bytes() == (reference / "xl.safetensors").read_bytes()


def _lora_loads(session: Path, pipeline) -> None:
    pipeline.load_lora_weights(str(session / "xl.safetensors"), adapter_name="kohya")
    pipeline.load_lora_weights(str(session / "xl-diffusers"), adapter_name="diffusers")
    adapted = {"unet", "text_encoder", "text_encoder_2"}
    assert {part for part in adapted if "kohya" in getattr(pipeline, part).peft_config} == adapted


def _embedding_loads(session: Path, pipeline) -> None:
    single = safetensors.torch.load_file(session / "zwx.safetensors")
    for key, encoder, tokenizer in (("clip_l", pipeline.text_encoder, pipeline.tokenizer),
                                    ("clip_g", pipeline.text_encoder_2, pipeline.tokenizer_2)):
        pipeline.load_textual_inversion(single[key], token="zwx", text_encoder=encoder, tokenizer=tokenizer)
        (row,) = tokenizer("zwx", add_special_tokens=False).input_ids
        assert torch.equal(encoder.get_input_embeddings().weight[row], single[key][0])


@pytest.mark.parametrize("method", ["lora", "textual-inversion"])
def test_lora_and_embedding_sessions_export_what_the_sdxl_pipeline_loads(method, tmp_path, prefect_api_url):
    """Kill/resume of both methods on SDXL: tests/training/test_resume_methods.py."""
    from diffusers import StableDiffusionXLPipeline

    extra = ["--lora-text-encoder"] if method == "lora" else ["--token", "zwx"]
    assert main([*train_args(tmp_path, "--method", method, "--steps", "2", "--sample-every", "0"), *extra]) == 0
    session = tmp_path / "xl"
    pipeline = StableDiffusionXLPipeline.from_pretrained(fetch_model("tiny-sdxl", Path(os.environ["DREAMBOOTH_CACHE"])).path)
    (_lora_loads if method == "lora" else _embedding_loads)(session, pipeline)
