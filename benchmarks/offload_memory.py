"""What --offload leaves on the GPU: full DreamBooth of a full-size model, with and without it.

    python benchmarks/offload_memory.py --models sdxl flux1-dev

Each row trains two steps of the real Trainer on fake tensors (training/memory/estimate.py's way: the
model built from its published configs, no weights) with 8-bit AdamW, gradient checkpointing,
the step in backward and a class image, the text encoders frozen; the peak is the second step's
(by then every block's optimizer state has its host copy), less what the host copies hold, which
a GPU run keeps in host RAM. The Trainer runs on the CPU here, so this subtraction is the only
thing that tells host from GPU: numbers, not a measurement on a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def peak(model: Path, resolution: int, offload: bool) -> tuple[int, int]:
    """(peak bytes on the GPU, bytes of the host copies) of the second of two steps."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from dreambooth_core.config import RuntimeSettings, TrainingSettings
    from dreambooth_core.training.memory import estimate
    from dreambooth_core.training.trainer import Trainer

    settings = TrainingSettings(method="dreambooth", mixed_precision="bf16", optimizer="adamw-8bit",
                                step_in_backward=True, text_encoder_steps=0)
    runtime = RuntimeSettings(gradient_checkpointing=True, offload=offload)
    tracker = estimate.LiveTensorBytes()
    with FakeTensorMode(allow_non_fake_inputs=True), tracker, estimate._fake_friendly(True), \
            estimate._cpu_kernel_notices_hidden():
        trainer = Trainer(estimate.build_parts(model), estimate._examples(resolution, "shrk"), settings,
                          total_steps=2, runtime=runtime, class_examples=estimate._examples(resolution, ""))
        trainer.scaler = torch.amp.GradScaler(enabled=False)  # as the estimate does
        trainer.step(0)
        tracker.reset_peak()
        trainer.step(1)
    host = trainer.offload.host_bytes if offload else 0
    return tracker.peak - host, host


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sdxl", "flux1-dev"], help="published architectures")
    args = parser.parse_args()
    import tempfile

    from dreambooth_core.families import detect_family, write_config_folder

    print("| model | px | without --offload | with --offload | host copies | seconds |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for name in args.models:
            began = time.perf_counter()
            folder = write_config_folder(name, Path(work) / name)
            resolution = detect_family(folder).resolution
            usual, _ = peak(folder, resolution, offload=False)
            offloaded, host = peak(folder, resolution, offload=True)
            gib = 2**30
            print(f"| {name} | {resolution} | {usual / gib:.1f} GiB | {offloaded / gib:.1f} GiB | "
                  f"{host / gib:.1f} GiB | {time.perf_counter() - began:.0f} |", flush=True)


if __name__ == "__main__":
    main()
