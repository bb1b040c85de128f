"""Peak host memory (RSS) of a full-size SD 1.5 `dreambooth train` run on this machine's CPU.

    python benchmarks/host_memory.py --steps 2 --chunk-steps 1

Writes the full SD 1.5 architecture with random weights (its published configs; nothing
is downloaded) as a diffusers folder, then runs the CLI on the example photos (enlarged to 640 px) with
the tiny tokenizer, and reports the largest RSS of the run's processes
(getrusage of the children: the training process is the largest) and how each
checkpoint was committed. On a CPU the training state itself lives in host memory;
`--method` picks what trains. Needs about 20 GB of RAM for dreambooth: run nothing
heavy beside it.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dreambooth_core.model.published import write_config_folder  # noqa: E402


def write_sd15(folder: Path) -> Path:
    from diffusers import StableDiffusionPipeline

    from dreambooth_core.training.memory_estimate import build_parts

    parts = build_parts(write_config_folder("sd15", folder / "configs"))
    StableDiffusionPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                            unet=parts.unet, scheduler=parts.noise_scheduler, safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False).save_pretrained(folder / "sd15")
    return folder / "sd15"


def photos_at_512(folder: Path) -> Path:
    """The example photos enlarged to 640 px (they are smaller than the 512 px training size)."""
    from PIL import Image

    folder.mkdir()
    for photo in sorted((REPO / "examples" / "photos").glob("*.jpg")):
        with Image.open(photo) as image:
            scale = 640 / min(image.size)
            image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)),
                                        Image.LANCZOS).save(folder / photo.name, quality=95)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--chunk-steps", type=int, default=1)
    parser.add_argument("--method", default="dreambooth")
    parser.add_argument("--text-encoder-steps", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dreambooth-host-memory-") as tmp:
        model = write_sd15(Path(tmp))
        command = [sys.executable, "-m", "flows.cli", "train", "--session", "host", "--storage", f"{tmp}/sessions",
                   "--model", str(model), "--photos", str(photos_at_512(Path(tmp) / "photos")), "--steps", str(args.steps),
                   "--chunk-steps", str(args.chunk_steps), "--method", args.method, "--sample-every", "0",
                   "--text-encoder-steps", str(args.text_encoder_steps), "--device", "cpu"]
        began = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                capture_output=True, text=True)
        seconds = time.perf_counter() - began
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kB on Linux -> GiB
    commits = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if "committing step" in line]
    print(f"| full-size SD 1.5, {args.method}, {args.steps} steps, checkpoint every {args.chunk_steps} | "
          f"peak RSS {peak:.2f} GiB | {seconds:.0f} s |")
    print("commits without a host copy:", commits or "none (each from a copy, in the background)")


if __name__ == "__main__":
    main()
