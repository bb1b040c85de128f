"""The [lowvram] targets, from the estimator: for each, the plan `--memory auto` chooses on a card of
the target's size, its estimated GPU peak, and the host's peak (what a 12.7 GB-RAM VM must hold).

    python benchmarks/memory_targets.py                  # every target (about ten minutes on 2 cores)
    python benchmarks/memory_targets.py --targets sd15-t4 flux1-lora-512

Each estimate runs real training steps of our Trainer on fake tensors of the full-size architecture
(dreambooth_core/training/memory/estimate.py: a quantised base, the text encoders off the GPU and
--offload counted as it documents), built from the published configs (nothing downloaded). The plan
is chosen as on a GPU with bitsandbytes (the Docker image), from the card's free memory less the
margin --memory auto keeps (training/memory/plan.py). A target is met when a plan fits the card
and its estimated peak is within the target. Host peak: training/memory/gpu_plans.py's
host_peak_bytes; "with copy" adds the host copy a checkpoint commit takes only where free RAM has
room for it.
Needs torch, diffusers, transformers and peft (no prefect, no GPU).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dreambooth_core.config import MemoryPlan, RuntimeSettings, TrainingSettings  # noqa: E402
from dreambooth_core.families import write_config_folder  # noqa: E402
from dreambooth_core.training.memory.gpu_plans import (  # noqa: E402
    COMMON_GPUS, Gpu, host_peak_bytes)
from dreambooth_core.training.memory.estimate import (  # noqa: E402
    MemoryEstimate, estimate_training_memory)
from dreambooth_core.training.memory.plan import (  # noqa: E402
    GIB, NoPlanFits, choose_plan, usable_bytes)

CARDS = {gpu.name: gpu for gpu in COMMON_GPUS}
VM_BYTES = 12.7e9  # a Colab VM's RAM


@dataclass(frozen=True)
class Target:
    title: str
    architecture: str
    resolution: int
    gib: float      # the GPU peak the target allows
    card: Gpu       # the card --memory auto plans for
    training: dict = field(default_factory=dict)


LORA_16 = {"method": "lora", "lora_rank": 16}
TARGETS = {
    "flux1-lora-512": Target("FLUX.1 [dev] LoRA rank 16, 512 px", "flux1-dev", 512, 12,
                             CARDS["RTX 3060 12 GB"], LORA_16),
    "flux1-lora-1024": Target("FLUX.1 [dev] LoRA rank 16, 1024 px", "flux1-dev", 1024, 16,
                              CARDS["RTX 4060 Ti 16 GB"], LORA_16),
    "klein-lora": Target("FLUX.2 [klein] base 4B LoRA rank 16, 1024 px", "flux2-klein-base-4b", 1024, 12,
                         CARDS["RTX 3060 12 GB"], LORA_16),
    "sdxl-dreambooth": Target("SDXL full DreamBooth (defaults), 1024 px", "sdxl", 1024, 16,
                              CARDS["RTX 4060 Ti 16 GB"], {"method": "dreambooth"}),
    "sd15-t4": Target("SD 1.5 defaults (DreamBooth), 512 px", "sd15", 512, 15, CARDS["T4 16 GB"]),
}
HEADER = ("| target (batch 1, class images) | card (usable GiB) | --memory auto plan | frozen base | GPU peak GiB | "
          "by phase GiB | target GiB | met | host peak GiB (with copy) | 12.7 GB VM | seconds |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    args = parser.parse_args()
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.targets:
            print(row(TARGETS[name], Path(tmp)), flush=True)


def row(target: Target, tmp: Path) -> str:
    start = time.perf_counter()
    folder = tmp / target.architecture
    if not folder.exists():
        write_config_folder(target.architecture, folder)
    card = target.card
    training = TrainingSettings(mixed_precision=card.precision, **target.training)
    runtime, known = RuntimeSettings(), {}

    def estimate(t: TrainingSettings, r: RuntimeSettings) -> MemoryEstimate:
        key = t.model_dump_json() + r.model_dump_json()
        if key not in known:
            known[key] = estimate_training_memory(folder, t, target.resolution, r, prior=True)
        return known[key]

    budget = usable_bytes(int(card.free_gib * GIB))
    where = f"| {target.title} | {card.name} ({budget / GIB:.1f}) |"
    try:
        plan = choose_plan(lambda t, r: estimate(t, r).peak_bytes, training, runtime, budget, eight_bit=True)
    except NoPlanFits:
        least = min(known.values(), key=lambda e: e.peak_bytes)
        return (f"{where} nothing fits | - | {least.peak_gib:.1f} (least) | {phases(least)} | {target.gib:g} | no: "
                f"{(least.peak_bytes - budget) / GIB:.1f} GiB over | - | - | {time.perf_counter() - start:.0f} |")
    chosen = estimate(*plan.apply(training, runtime))
    met = "yes" if chosen.peak_gib <= target.gib else f"no: {chosen.peak_gib - target.gib:.1f} GiB over"
    host, copy = host_peak_bytes(chosen, copy=False), host_peak_bytes(chosen, copy=True)
    vm = "yes" if host <= VM_BYTES else f"no: {(host - VM_BYTES) / 1e9:.1f} GB over"
    return (f"{where} {plan.describe()} | {base(plan, training)} | {chosen.peak_gib:.1f} | {phases(chosen)} | "
            f"{target.gib:g} | {met} | "
            f"{host / GIB:.1f} ({copy / GIB:.1f}) | {vm} | {time.perf_counter() - start:.0f} |")


def phases(estimate: MemoryEstimate) -> str:
    return " · ".join(f"{name} {peak / GIB:.1f}" for name, peak in estimate.phase_peaks.items())


def base(plan: MemoryPlan, training: TrainingSettings) -> str:
    return training.mixed_precision if plan.base_precision == "auto" else plan.base_precision


if __name__ == "__main__":
    main()
