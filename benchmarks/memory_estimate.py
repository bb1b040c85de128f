"""Estimated peak training memory of every published architecture the tool knows (SD 1.5 / 2.1, SDXL,
FLUX.1, FLUX.2 [klein]), on a CPU, without weights.

    python benchmarks/memory_estimate.py                      # every model x plan, bf16, native resolution
    python benchmarks/memory_estimate.py --models sd15 --precision fp16
    python benchmarks/memory_estimate.py --models flux1-dev --resolutions native 512

Each row runs real training steps of our Trainer on fake tensors
(dreambooth_core/training/memory/estimate.py) and prints the peak of live tensor
bytes and what stays between steps, in GiB, as a markdown table. The models are
built from their published configurations (dreambooth_core.families.ARCHITECTURES;
nothing is downloaded) at the resolution each family reads from them ("native") or
the one given; a plan the family cannot train (textual inversion of FLUX) is a row
saying why. Needs torch, diffusers, transformers and peft (no prefect).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dreambooth_core.config import RuntimeSettings, TrainingSettings  # noqa: E402
from dreambooth_core.errors import ConfigError  # noqa: E402
from dreambooth_core.families import ARCHITECTURES, detect_family, family_of  # noqa: E402
from dreambooth_core.families import write_config_folder  # noqa: E402
from dreambooth_core.training.memory.estimate import estimate_training_memory  # noqa: E402

CHECKPOINTING = {"gradient_checkpointing": True}
PLANS = {  # name: (training options, runtime options, class images)
    "dreambooth, text encoder phase, prior": ({"method": "dreambooth", "text_encoder_steps": 1}, {}, True),
    "dreambooth, text encoder phase, prior, 8-bit AdamW": (
        {"method": "dreambooth", "text_encoder_steps": 1, "optimizer": "adamw-8bit"}, {}, True),
    "dreambooth, text encoder phase, prior, 8-bit AdamW, checkpointing": (
        {"method": "dreambooth", "text_encoder_steps": 1, "optimizer": "adamw-8bit"}, CHECKPOINTING, True),
    "dreambooth, denoiser only, prior": ({"method": "dreambooth", "text_encoder_steps": 0}, {}, True),
    "dreambooth, denoiser only, prior, 8-bit AdamW, checkpointing": (
        {"method": "dreambooth", "text_encoder_steps": 0, "optimizer": "adamw-8bit"}, CHECKPOINTING, True),
    "dreambooth, denoiser only, prior, 8-bit AdamW, checkpointing, step in backward": (
        {"method": "dreambooth", "text_encoder_steps": 0, "optimizer": "adamw-8bit", "step_in_backward": True},
        CHECKPOINTING, True),
    "dreambooth, text encoder phase, prior, 8-bit AdamW, checkpointing, step in backward": (
        {"method": "dreambooth", "text_encoder_steps": 1, "optimizer": "adamw-8bit", "step_in_backward": True},
        CHECKPOINTING, True),
    "dreambooth, denoiser only, prior, checkpointing": ({"method": "dreambooth", "text_encoder_steps": 0},
                                                        CHECKPOINTING, True),
    "dreambooth, denoiser only, prior, EMA": (
        {"method": "dreambooth", "text_encoder_steps": 0, "ema_decay": 0.999}, {}, True),
    "lora rank 8, prior": ({"method": "lora"}, {}, True),
    "lora rank 8, prior, checkpointing": ({"method": "lora"}, CHECKPOINTING, True),
    "lora rank 8, text encoder too, prior, checkpointing": ({"method": "lora", "lora_text_encoder": True},
                                                            CHECKPOINTING, True),
    "textual inversion": ({"method": "textual-inversion"}, {}, False),
    "textual inversion, checkpointing": ({"method": "textual-inversion"}, CHECKPOINTING, False),
}


def plan_name(name: str) -> str:
    """Earlier BENCHMARKS.md sections ran with "UNet only" for what is now "denoiser only"."""
    return name.replace("UNet only", "denoiser only")


def resolution(value: str) -> str:
    if value != "native" and not (value.isdigit() and int(value) % 64 == 0):
        raise argparse.ArgumentTypeError(f"{value!r} is neither 'native' nor a multiple of 64 px")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    parser.add_argument("--precision", choices=["no", "fp16", "bf16"], default="bf16")
    parser.add_argument("--plans", nargs="+", type=plan_name, choices=PLANS, default=list(PLANS),
                        metavar="PLAN")
    parser.add_argument("--resolutions", nargs="+", type=resolution, default=["native"],
                        help="'native' (the model's own, from its configs) and/or sizes in px")
    args = parser.parse_args()
    print(f"| model | resolution | plan ({args.precision}, batch 1) | peak GiB | between steps GiB | "
          "checkpoint GiB | seconds |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            build = write_config_folder(name, Path(tmp) / name)
            facts = detect_family(build)
            sizes = dict.fromkeys(facts.resolution if r == "native" else int(r) for r in args.resolutions)
            for size in sizes:
                for plan in args.plans:
                    print(row(name, build, facts, size, plan, args.precision), flush=True)


def row(name: str, build: Path, facts, size: int, plan: str, precision: str) -> str:
    training, runtime, prior = PLANS[plan]
    settings = TrainingSettings(steps=10, mixed_precision=precision, **training)
    family = family_of(facts)
    where = f"| {name} | {size} px{' (native)' if size == facts.resolution else ''} | {plan} |"
    if settings.trains_text_encoder and not family.trainable_text_encoders:
        return f"{where} skipped: {family.title} trains no text encoder (same as without the phase) | | | |"
    try:
        estimate = estimate_training_memory(build, settings, size, RuntimeSettings(**runtime), prior)
    except ConfigError as exc:  # what the family cannot train, with its reason
        return f"{where} skipped: {str(exc).split(':')[0]} | | | |"
    return (f"{where} {estimate.peak_gib:.2f} | {estimate.between_steps / 2**30:.2f} | "
            f"{estimate.checkpoint_bytes / 2**30:.2f} | {estimate.seconds:.1f} |")


if __name__ == "__main__":
    main()
