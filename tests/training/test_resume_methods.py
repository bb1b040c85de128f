"""Kill/resume equality for every method and the options that carry state across steps.

Each case SIGKILLs a real `dreambooth train` mid-way through its second chunk,
reruns it, and compares everything training produced with an uninterrupted run:
the trained tensors (and EMA) bit for bit, the exported files and the samples
of the last chunk byte for byte.
"""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
from test_resume import REPO, run_cli

pytestmark = pytest.mark.slow  # a CLI or Prefect run each: the full suite only

STEPS, CHUNK = 8, 4
CASES = {
    # The text-encoder phase ends at step 6, inside the chunk the kill interrupts.
    "dreambooth, text-encoder phase, fp16 + scaler, EMA, prior, flip, min-SNR": [
        "--text-encoder-steps", "6", "--mixed-precision", "fp16", "--ema-decay", "0.9",
        "--class-word", "man", "--class-images", "2", "--flip", "--min-snr-gamma", "5",
        "--offset-noise", "0.05", "--learning-rate", "1e-4"],
    "textual inversion": ["--method", "textual-inversion", "--token", "zwx", "--learning-rate", "1e-2"],
    "SDXL lora on the UNet and both text encoders": [
        "--model", "tiny-sdxl", "--method", "lora", "--lora-text-encoder", "--text-encoder-steps", "6",
        "--class-word", "man", "--class-images", "2", "--flip", "--learning-rate", "1e-3"],
    "SDXL textual inversion": ["--model", "tiny-sdxl", "--method", "textual-inversion", "--token", "zwx",
                               "--learning-rate", "1e-2"],
    # Flow matching: noise levels and the latent sample drawn per step; FLUX trains CLIP-L in its phase.
    "FLUX.1 lora on an int8 base, the transformer and CLIP-L, prior, flip": [
        "--model", "tiny-flux", "--base-precision", "int8", "--method", "lora", "--lora-text-encoder",
        "--text-encoder-steps", "6", "--class-word", "man", "--class-images", "2", "--flip",
        "--learning-rate", "1e-3"],
    # Its CLIP-L phase ends at step 2: the embeddings stored then are the trained encoder's (and T5's).
    "FLUX.1 dreambooth, CLIP-L phase to step 2, EMA, offset noise": [
        "--model", "tiny-flux", "--text-encoder-steps", "2", "--ema-decay", "0.9", "--offset-noise", "0.05",
        "--learning-rate", "1e-4"],
    "FLUX.2 [klein] lora, prior": ["--model", "tiny-klein", "--method", "lora", "--class-word", "man",
                                   "--class-images", "2", "--learning-rate", "1e-3"],
    "FLUX.2 [klein] dreambooth, EMA, flip": ["--model", "tiny-klein", "--ema-decay", "0.9", "--flip",
                                             "--learning-rate", "1e-4"],
    # Photos of three shapes in three aspect-ratio buckets (48x80, 64x64, 80x48): batches of 2 from one
    # bucket, class images rendered per bucket, SDXL's time ids from each bucket's size and crop.
    "SDXL lora in aspect-ratio buckets, batch 2, prior, flip": [
        "--model", "tiny-sdxl", "--photos", str(REPO / "tests" / "data" / "photos-in-buckets"), "--buckets", "on",
        "--method", "lora", "--batch-size", "2", "--class-word", "man", "--class-images", "2", "--flip",
        "--learning-rate", "1e-3"],
    # QLoRA: the adapters on an int8 base (torchao), which each rerun quantises again the same way.
    "lora on an int8 base, UNet and text encoder": [
        "--base-precision", "int8", "--method", "lora", "--lora-text-encoder", "--text-encoder-steps", "6",
        "--lora-rank", "4", "--class-word", "man", "--class-images", "2", "--learning-rate", "1e-3"],
}


# Resumed a second time from a copy of the killed run with its stored text embeddings deleted: they
# are encoded again, to the same bits (text_embeddings.py). Klein's encoder never trains: its captions
# are stored at the setup.
EMBEDDINGS_DELETED = ("FLUX.1 dreambooth, CLIP-L phase to step 2, EMA, offset noise", "FLUX.2 [klein] lora, prior")


def train(api_url, root: Path, options: list[str], kill_at=None):
    root.mkdir(exist_ok=True)
    args = ["train", "--session", "s", "--storage", str(root / "sessions"), "--model", "tiny",  # options may override
            "--photos", str(REPO / "examples" / "photos"), "--steps", str(STEPS),
            "--chunk-steps", str(CHUNK), "--sample-steps", "2", "--seed", "3", *options]
    return run_cli(api_url, root, *args, kill_at=kill_at)


def produced(session: Path) -> dict[str, bytes]:
    """Everything a user keeps: outputs, the last samples, the final training state's tensors."""
    files = {p.relative_to(session).as_posix(): p.read_bytes() for p in session.rglob("*")
             if p.is_file() and (p.suffix in {".safetensors", ".ckpt", ".pt"} or "samples/step-000008" in str(p))
             and "checkpoints" not in p.parts and "diffusers" not in p.parts}
    assert any(name.startswith("samples/") for name in files)
    return files


def final_tensors(session: Path) -> dict[str, torch.Tensor]:
    folder = session / "checkpoints" / f"step-{STEPS:06d}"
    tensors = safetensors.torch.load_file(folder / "weights.safetensors")
    if (folder / "ema.safetensors").exists():
        tensors |= {f"ema.{k}": v for k, v in safetensors.torch.load_file(folder / "ema.safetensors").items()}
    return tensors


@pytest.mark.parametrize("case", CASES)
def test_killed_run_resumes_to_the_uninterrupted_result(prefect_api_url, tmp_path, case):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = train(prefect_api_url, whole, CASES[case])
    assert done.returncode == 0, done.stderr[-3000:]
    first = train(prefect_api_url, killed, CASES[case], kill_at="step:6")  # chunk 1 committed at 4
    assert first.returncode == -9, first.stderr[-3000:]
    roots = [killed]
    if case in EMBEDDINGS_DELETED:
        stored = embedding_files(killed / "sessions" / "s")
        assert stored, "the killed run kept no text embeddings in its session"
        roots.append(tmp_path / "deleted")
        shutil.copytree(killed, roots[1])
        shutil.rmtree(roots[1] / "sessions" / "s" / "text_embeddings")
    for root in roots:
        second = train(prefect_api_url, root, CASES[case])
        assert second.returncode == 0, second.stderr[-3000:]
        assert "Resuming from committed checkpoint at step 4" in second.stderr
        expected, actual = final_tensors(whole / "sessions" / "s"), final_tensors(root / "sessions" / "s")
        assert expected.keys() == actual.keys()
        different = [k for k in expected if not torch.equal(expected[k], actual[k])]
        assert not different, f"{root.name}: {len(different)} tensors differ, e.g. {different[:3]}"
    if "--buckets" in CASES[case]:  # the photos trained in their three shapes
        items = json.loads((whole / "sessions" / "s" / "dataset" / "manifest.json").read_text())["items"]
        assert sorted(tuple(i["size"]) for i in items) == [(48, 80), (64, 64), (64, 64), (80, 48)]
    ours, theirs = produced(whole / "sessions" / "s"), produced(killed / "sessions" / "s")
    assert ours.keys() == theirs.keys()
    assert {k: hashlib.sha256(v).hexdigest() for k, v in ours.items()} == \
           {k: hashlib.sha256(v).hexdigest() for k, v in theirs.items()}
    if case in EMBEDDINGS_DELETED:
        assert embedding_files(killed / "sessions" / "s") == stored  # read back, never written again
        assert embedding_files(roots[1] / "sessions" / "s").keys() == stored.keys()  # encoded again


def embedding_files(session: Path) -> dict[str, int]:
    """Each stored text embedding's name, with the time it was written."""
    return {p.name: p.stat().st_mtime_ns for p in (session / "text_embeddings").glob("*.safetensors")}
