"""Estimated peak training memory of the full-size SD 1.5 / 2.1 / SDXL architectures, on a CPU, without weights.

    python benchmarks/memory_estimate.py                      # every model x plan, bf16, 512/768 px
    python benchmarks/memory_estimate.py --models sd15 --precision fp16

Each row runs real training steps of our Trainer on fake tensors
(dreambooth_core/training/memory_estimate.py) and prints the peak of live tensor
bytes and what stays between steps, in GiB, as a markdown table. The models are
built from their published configurations (nothing is downloaded); the token ids
come from the tiny tokenizer, which changes no size. Needs torch, diffusers,
transformers and peft (no prefect).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dreambooth_core.config import RuntimeSettings, TrainingSettings  # noqa: E402
from dreambooth_core.families import detect_family  # noqa: E402
from dreambooth_core.families import ARCHITECTURES, write_config_folder  # noqa: E402
from dreambooth_core.training.memory_estimate import estimate_training_memory  # noqa: E402

PLANS = {  # name: (training options, runtime options, class images)
    "dreambooth, text encoder phase, prior": ({"method": "dreambooth", "text_encoder_steps": 1}, {}, True),
    "dreambooth, text encoder phase, prior, 8-bit AdamW": (
        {"method": "dreambooth", "text_encoder_steps": 1, "optimizer": "adamw-8bit"}, {}, True),
    "dreambooth, text encoder phase, prior, 8-bit AdamW, checkpointing": (
        {"method": "dreambooth", "text_encoder_steps": 1, "optimizer": "adamw-8bit"},
        {"gradient_checkpointing": True}, True),
    "dreambooth, UNet only, prior": ({"method": "dreambooth", "text_encoder_steps": 0}, {}, True),
    "dreambooth, UNet only, prior, 8-bit AdamW, checkpointing": (
        {"method": "dreambooth", "text_encoder_steps": 0, "optimizer": "adamw-8bit"},
        {"gradient_checkpointing": True}, True),
    "dreambooth, UNet only, prior, 8-bit AdamW, checkpointing, step in backward": (
        {"method": "dreambooth", "text_encoder_steps": 0, "optimizer": "adamw-8bit", "step_in_backward": True},
        {"gradient_checkpointing": True}, True),
    "dreambooth, text encoder phase, prior, 8-bit AdamW, checkpointing, step in backward": (
        {"method": "dreambooth", "text_encoder_steps": 1, "optimizer": "adamw-8bit", "step_in_backward": True},
        {"gradient_checkpointing": True}, True),
    "dreambooth, UNet only, prior, checkpointing": ({"method": "dreambooth", "text_encoder_steps": 0},
                                                    {"gradient_checkpointing": True}, True),
    "dreambooth, UNet only, prior, EMA": ({"method": "dreambooth", "text_encoder_steps": 0, "ema_decay": 0.999},
                                          {}, True),
    "lora rank 8, prior": ({"method": "lora"}, {}, True),
    "lora rank 8, prior, checkpointing": ({"method": "lora"}, {"gradient_checkpointing": True}, True),
    "lora rank 8, text encoder too, prior, checkpointing": ({"method": "lora", "lora_text_encoder": True},
                                                            {"gradient_checkpointing": True}, True),
    "textual inversion": ({"method": "textual-inversion"}, {}, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    parser.add_argument("--precision", choices=["no", "fp16", "bf16"], default="bf16")
    parser.add_argument("--plans", nargs="+", choices=PLANS, default=list(PLANS), metavar="PLAN")
    args = parser.parse_args()
    print(f"| model | plan ({args.precision}, batch 1) | peak GiB | between steps GiB | checkpoint GiB | seconds |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            build = write_config_folder(name, Path(tmp) / name)
            family = detect_family(build)
            resolution = family.resolution
            for plan in args.plans:
                training, runtime, prior = PLANS[plan]
                settings = TrainingSettings(steps=10, mixed_precision=args.precision, **training)
                estimate = estimate_training_memory(build, settings, resolution, RuntimeSettings(**runtime), prior)
                print(f"| {name} ({resolution} px) | {plan} | {estimate.peak_gib:.2f} | "
                      f"{estimate.between_steps / 2**30:.2f} | {estimate.checkpoint_bytes / 2**30:.2f} | {estimate.seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
