"""Training speed, memory and checkpoint cost of our training code.

    python benchmarks/train_speed.py --model tiny --device cpu --steps 50
    python benchmarks/train_speed.py --model sd15 --device cuda --steps 100

`sd15` is the full-size Stable Diffusion 1.5 architecture built from its
published configuration with random weights (nothing is downloaded); `tiny`
is the built-in tiny model. Needs torch, diffusers and transformers only
(no prefect), so it runs on a bare GPU box.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dreambooth_core.config import RuntimeSettings, TrainingSettings  # noqa: E402
from dreambooth_core.families.sd_configs import SD15_SCHEDULER, SD15_TEXT, SD15_UNET, SD15_VAE  # noqa: E402
from dreambooth_core.families.sd_tiny import build_tiny_model  # noqa: E402
from dreambooth_core.model.tiny import write_tiny_tokenizer  # noqa: E402
from dreambooth_core.session.checkpoints import CheckpointStore  # noqa: E402
from dreambooth_core.session.folder import Session  # noqa: E402
from dreambooth_core.families.family import ModelParts  # noqa: E402
from dreambooth_core.families import load_model_parts  # noqa: E402
from dreambooth_core.training.trainer import Example, Trainer  # noqa: E402


def sd15_parts(device: torch.device, folder: Path) -> tuple[ModelParts, int]:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    write_tiny_tokenizer(folder)  # token ids only index the embedding; speed is the same
    parts = ModelParts(
        unet=UNet2DConditionModel(**SD15_UNET), vae=AutoencoderKL(**SD15_VAE),
        text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT)),
        tokenizer=CLIPTokenizer.from_pretrained(folder), noise_scheduler=DDPMScheduler(**SD15_SCHEDULER))
    for module in (parts.denoiser, parts.vae, parts.text_encoder):
        module.to(device)
    parts.vae.requires_grad_(False).eval()
    parts.text_encoder.requires_grad_(False).eval()
    return parts, 512


def tiny_parts(device: torch.device, folder: Path) -> tuple[ModelParts, int]:
    from dreambooth_core.families.sd_tiny import TINY_RESOLUTION

    return load_model_parts(str(build_tiny_model(folder)), device), TINY_RESOLUTION


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="dreambooth-bench-") as work:
        return measure(args, Path(work))


def measure(args: argparse.Namespace, work: Path) -> dict:
    device = torch.device(args.device)
    parts, resolution = (sd15_parts if args.model == "sd15" else tiny_parts)(device, work / "model")
    resolution = args.resolution or resolution
    pixels = torch.rand(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1
    examples = [Example(pixels=pixels, caption="photo of shrk person", subject="shrk")]
    classes = [Example(pixels=-pixels, caption="photo of person", subject="shrk")] if args.prior else []
    trainer = Trainer(parts, examples, training_from(args), total_steps=args.warmup + args.steps,
                      runtime=runtime_from(args), class_examples=classes)
    for step in range(args.warmup):
        trainer.step(step)
    synchronize(device)
    began = time.perf_counter()
    for step in range(args.warmup, args.warmup + args.steps):
        loss = trainer.step(step)
    synchronize(device)
    seconds_per_step = (time.perf_counter() - began) / args.steps
    store = CheckpointStore(Session(str(work / "sessions"), "bench"))
    began = time.perf_counter()
    writers = trainer.state_writers()  # what training waits for: the copy to host memory
    copy_seconds = time.perf_counter() - began
    store.save(args.warmup + args.steps, writers, meta={})
    save_seconds = time.perf_counter() - began
    chunk_seconds = args.chunk_steps * seconds_per_step
    return {
        "model": args.model, "device": str(device), "machine": platform.node(),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "resolution": resolution, "steps": args.steps,
        "options": trainer.settings.model_dump(include={"method", "optimizer", "batch_size", "text_encoder_steps"})
        | trainer.runtime.model_dump(include={"gradient_checkpointing", "cache_latents", "channels_last", "compile"})
        | {"mixed_precision": trainer.precision, "prior": args.prior},
        "it_per_s": round(1 / seconds_per_step, 2), "ms_per_step": round(seconds_per_step * 1e3, 1),
        "peak_memory_gb": round(peak_memory_gb(device), 2), "final_loss": round(loss.item(), 4),
        "checkpoint_gb": round(sum(f.stat().st_size for f in (work / "sessions").rglob("*") if f.is_file()) / 1e9, 3),
        "checkpoint_copy_s": round(copy_seconds, 3), "checkpoint_save_s": round(save_seconds, 3),
        "chunk_steps": args.chunk_steps,
        # Training waits only for the copy; the write overlaps the next chunk
        # (it must finish within it: save_s below chunk_steps x ms_per_step).
        "checkpoint_share": round(copy_seconds / (chunk_seconds + copy_seconds), 4),
        "checkpoint_share_if_blocking": round(save_seconds / (chunk_seconds + save_seconds), 4),
        "write_hidden_by_next_chunk": save_seconds - copy_seconds < chunk_seconds,
    }


def training_from(args: argparse.Namespace) -> TrainingSettings:
    return TrainingSettings(method=args.method, learning_rate=2e-6, mixed_precision=args.mixed_precision,
                            optimizer=args.optimizer, batch_size=args.batch_size,
                            text_encoder_steps=args.text_encoder_steps)


def runtime_from(args: argparse.Namespace) -> RuntimeSettings:
    return RuntimeSettings(gradient_checkpointing=args.gradient_checkpointing, cache_latents=not args.no_cache,
                           cache_text_embeddings=not args.no_cache, channels_last=args.channels_last,
                           compile=args.compile)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=50, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--resolution", type=int, help="image size (default: the model's own)")
    parser.add_argument("--chunk-steps", type=int, default=500,
                        help="chunk size for the checkpoint share (the default --chunk-steps)")
    parser.add_argument("--method", choices=["dreambooth", "lora", "textual-inversion"], default="dreambooth")
    parser.add_argument("--mixed-precision", choices=["auto", "no", "fp16", "bf16"], default="auto")
    parser.add_argument("--optimizer", choices=["adamw", "adamw-8bit"], default="adamw")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--no-cache", action="store_true", help="encode latents and captions every step")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--prior", action="store_true", help="add a class image per photo (prior preservation)")
    parser.add_argument("--text-encoder-steps", type=int, default=0,
                        help="train the text encoder during the timed steps when larger than them")
    print(json.dumps(run(parser.parse_args(argv)), indent=2))


if __name__ == "__main__":
    main()
