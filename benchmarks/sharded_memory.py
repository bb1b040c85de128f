"""--shard: what each GPU holds when full DreamBooth is sharded over N GPUs (FSDP2), estimated on a
CPU without weights, for the published architectures (nothing is downloaded).

    python benchmarks/sharded_memory.py --models flux1-dev sdxl --gpus 1 2 4 8

N = 1 is the run without --shard. Each row is dreambooth_core/training/memory/estimate.py's
measured step (N >= 2: rank 0 of N in a fake process group, sharded_estimate.py), in GiB: the
per-GPU peak and the phases it is the largest of (loading: the denoiser moved whole and
sharded; the denoiser's training step), what stays between steps, and the host of a machine
running all N processes (dreambooth plan's "host needs"). Needs torch, diffusers, transformers
and peft (no prefect).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dreambooth_core.config import RuntimeSettings, TrainingSettings  # noqa: E402
from dreambooth_core.families import ARCHITECTURES, detect_family, write_config_folder  # noqa: E402
from dreambooth_core.training.memory.estimate import estimate_training_memory  # noqa: E402
from dreambooth_core.training.memory.gpu_plans import host_peak_bytes  # noqa: E402

GIB = 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=ARCHITECTURES, default=["flux1-dev"])
    parser.add_argument("--gpus", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--precision", choices=["no", "bf16"], default="bf16")
    parser.add_argument("--text-encoder-steps", type=int, default=0)
    parser.add_argument("--checkpointing", action="store_true", help="with --gradient-checkpointing")
    args = parser.parse_args()
    print("| model | px | GPUs | per-GPU peak | loading | denoiser step | between steps | host per machine "
          "| seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            folder = write_config_folder(name, Path(tmp) / name)
            size = detect_family(folder).resolution
            for gpus in args.gpus:
                settings = TrainingSettings(steps=10, method="dreambooth", mixed_precision=args.precision,
                                            text_encoder_steps=args.text_encoder_steps, gpus=gpus,
                                            shard=gpus > 1)
                runtime = RuntimeSettings(gradient_checkpointing=args.checkpointing)
                estimate = estimate_training_memory(folder, settings, size, runtime, prior=True)
                phases = estimate.phase_peaks
                host = host_peak_bytes(estimate, copy=gpus == 1) * gpus
                print(f"| {name} | {size} | {gpus} | {estimate.peak_gib:.2f} | "
                      f"{phases.get('loading', 0) / GIB:.2f} | {phases['denoiser'] / GIB:.2f} | "
                      f"{estimate.between_steps / GIB:.2f} | {host / GIB:.1f} | {estimate.seconds:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
