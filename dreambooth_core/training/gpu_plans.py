"""`dreambooth plan`: what --memory auto would choose on the GPUs users have, with the
estimated peak GPU and host memory and the checkpoint size, before any GPU is rented.

GPU memory is what such a card shows free once CUDA has started (total less the
context, about 0.4-0.9 GiB). Host memory is what the run needs: the process's own
baseline (1.2 GiB: torch, diffusers, transformers and Prefect imported measure 0.46 GiB
on the CPU build, and CUDA's libraries add about 0.7 GiB, not measured here) plus the
model as the Trainer holds it before it moves to the GPU (frozen weights already in half;
weights loaded from safetensors are mapped from the file, so this is an upper bound). A
background checkpoint commit keeps a host copy of the state on top only where the free RAM
has room for it, else it writes without one: "with copy" is the peak then.
"""

from __future__ import annotations

from dataclasses import dataclass

from dreambooth_core.config import MemoryPlan, RuntimeSettings, TrainingSettings
from dreambooth_core.training.memory_estimate import MemoryEstimate, estimate_training_memory
from dreambooth_core.training.memory_plan import GIB, NoPlanFits, choose_plan, usable_bytes


@dataclass(frozen=True)
class Gpu:
    name: str
    free_gib: float   # free after the CUDA context
    precision: str    # what --mixed-precision auto picks there


COMMON_GPUS = (Gpu("T4 16 GB", 14.6, "fp16"), Gpu("L4 24 GB", 21.9, "bf16"), Gpu("A100 40 GB", 39.0, "bf16"),
               Gpu("A100 80 GB", 78.7, "bf16"), Gpu("H100 80 GB", 78.7, "bf16"))
HOST_BASELINE_BYTES = int(1.2 * GIB)


@dataclass(frozen=True)
class GpuPlan:
    gpu: Gpu
    plan: MemoryPlan | None  # None: nothing fits
    estimate: MemoryEstimate | None
    problem: str = ""

    @property
    def host_bytes(self) -> int:
        return HOST_BASELINE_BYTES + self.estimate.model_bytes if self.estimate else 0

    @property
    def host_bytes_with_copy(self) -> int:
        e = self.estimate
        return HOST_BASELINE_BYTES + max(e.model_bytes, e.checkpoint_bytes) if e else 0


def plans_on_common_gpus(model_path: str, training: TrainingSettings, runtime: RuntimeSettings,
                         resolution: int, prior: bool, eight_bit: bool) -> list[GpuPlan]:
    """The plan --memory auto picks on each of COMMON_GPUS (with 8-bit AdamW where `eight_bit`); the
    estimate's ConfigError for settings the model's family cannot train."""
    estimates: dict[str, MemoryEstimate] = {}

    def estimate(t: TrainingSettings, r: RuntimeSettings) -> MemoryEstimate:
        key = t.model_dump_json() + r.model_dump_json()
        if key not in estimates:
            estimates[key] = estimate_training_memory(model_path, t, resolution, r, prior)
        return estimates[key]

    rows = []
    for gpu in COMMON_GPUS:
        t = training.model_copy(update={"mixed_precision": gpu.precision}) \
            if training.mixed_precision == "auto" else training
        try:
            plan = choose_plan(lambda a, b: estimate(a, b).peak_bytes, t, runtime,
                               usable_bytes(int(gpu.free_gib * GIB)), eight_bit)
        except NoPlanFits as exc:
            rows.append(GpuPlan(gpu, None, None, str(exc)))
            continue
        rows.append(GpuPlan(gpu, plan, estimate(*plan.apply(t, runtime))))
    return rows


def plan_table(rows: list[GpuPlan]) -> list[str]:
    lines = ["| GPU | --memory auto plan | GPU peak (usable) | host needs (with copy) | checkpoint |",
             "|---|---|---|---|---|"]
    for row in rows:
        if row.plan is None:
            lines.append(f"| {row.gpu.name} | does not fit | - | - | - |")
            continue
        lines.append(f"| {row.gpu.name} | {row.plan.describe()} | {row.plan.estimated_peak_bytes / GIB:.1f} GiB "
                     f"({row.plan.budget_bytes / GIB:.1f}) | {row.host_bytes / GIB:.1f} GiB "
                     f"({row.host_bytes_with_copy / GIB:.1f}) | "
                     f"{row.estimate.checkpoint_bytes / GIB:.2f} GiB |")
    return lines
