"""Rendering speed of our pipeline: seconds per denoising step and per VAE decode.

    python benchmarks/render_speed.py --model sd15 --device cpu --resolution 512
    python benchmarks/render_speed.py --model tiny --device cpu

`sd15` / `sd21-512` / `sd21-768-v`: the full-size architecture built from its published
configuration with random weights (nothing is downloaded; the speed is the weights'
shape's); `tiny`: the built-in tiny model. The CPU figures are what `generate` and
`evaluate` warn with when there is no GPU. Needs torch, diffusers and transformers only.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dreambooth_core.generation.pipeline import build_pipeline, render  # noqa: E402
from dreambooth_core.families import ARCHITECTURES  # noqa: E402
from dreambooth_core.families.sd_tiny import build_tiny_model  # noqa: E402
from dreambooth_core.training.memory.estimate import write_random_model  # noqa: E402


def seconds_of(pipeline, steps: int, resolution: int, device: torch.device) -> float:
    generators = [torch.Generator("cpu").manual_seed(0)]
    began = time.perf_counter()
    render(pipeline, "a photo of a dog", generators, resolution, steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - began


def measure(args: argparse.Namespace, work: Path) -> dict:
    device = torch.device(args.device)
    if args.model == "tiny":
        path = build_tiny_model(work / "model")
    else:
        path = write_random_model(args.model, work / "model")
    pipeline = build_pipeline(str(path), device)
    seconds_of(pipeline, 1, args.resolution, device)  # warm-up
    short = seconds_of(pipeline, 1, args.resolution, device)
    long = seconds_of(pipeline, 1 + args.steps, args.resolution, device)
    per_step = (long - short) / args.steps
    return {"model": args.model, "device": str(device), "resolution": args.resolution,
            "seconds_per_step": round(per_step, 3), "seconds_besides_steps": round(short - per_step, 3),
            "seconds_per_image_25_steps": round(short - per_step + 25 * per_step, 2),
            "machine": f"{platform.machine()} {torch.get_num_threads()} threads", "torch": torch.__version__}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", *ARCHITECTURES], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=None, help="default: 512, or 64 for tiny")
    parser.add_argument("--steps", type=int, default=3, help="Denoising steps timed beyond the first.")
    args = parser.parse_args(argv)
    args.resolution = args.resolution or (64 if args.model == "tiny" else 512)
    with tempfile.TemporaryDirectory(prefix="render-speed-") as tmp:
        print(json.dumps(measure(args, Path(tmp))))


if __name__ == "__main__":
    main()
