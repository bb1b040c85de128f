"""`dreambooth plan`: what --memory auto would choose on the GPUs users have, with the
estimated peak GPU and host memory and the checkpoint size, before any GPU is rented.

GPU memory is what such a card shows free once CUDA has started (total less the
context, about 0.4-0.9 GiB). Host memory is what the run needs at its most: the process's
own baseline (1.2 GiB: torch, diffusers, transformers and Prefect imported measure 0.46 GiB
on the CPU build, and CUDA's libraries add about 0.7 GiB, not measured here) plus the larger of
- loading: the model as the Trainer holds it before it moves to the GPU (frozen weights
  already in half; weights loaded from safetensors are mapped from the file, so this is an
  upper bound), less the layers of a quantised base, which are quantised shard by shard
  onto the GPU and never held whole on the host: only the layer being converted, in fp32;
- training: what --offload keeps on the host (the blocks' weights, gradients, optimizer state).
A background checkpoint commit keeps a host copy of the state on top of training's only where
the free RAM has room for it, else it writes without one: "with copy" is the peak then.

With --shard the GPU peak is one GPU's of the --gpus (sharded_estimate.py), and the host's is a
machine's: each of its processes (--gpus / --nnodes) loads the whole model on the host before it
moves to its GPU and is sharded there, and commits its shards without a host copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from dreambooth_core.config import MemoryPlan, RuntimeSettings, TrainingSettings
from dreambooth_core.training.devices import offload_problem, precision_problem
from dreambooth_core.training.memory.estimate import MemoryEstimate, estimate_training_memory
from dreambooth_core.training.memory.plan import GIB, NoPlanFits, choose_plan, usable_bytes


@dataclass(frozen=True)
class Gpu:
    name: str
    free_gib: float   # free after the CUDA context
    precision: str    # what --mixed-precision auto picks there
    capability: tuple[int, int]  # CUDA compute capability: which precisions it has
    dollars_per_hour: float | None = None  # on demand, one GPU with its VM (PRICES); None: no cloud offers it


# Google Cloud's on-demand prices in us-central1 (the cloud prefect.yaml deploys to), per hour of the
# smallest VM with one such GPU, GPU included: n1-standard-4 + T4 (0.19 + 0.35), g2-standard-4 (L4),
# a2-highgpu-1g (A100 40 GB), a2-ultragpu-1g (A100 80 GB), a3-highgpu-8g / 8 (H100: sold 8 at a time).
PRICES = "Google Cloud on-demand, us-central1, a VM with the GPU, as published in 2024; check current prices"
COMMON_GPUS = (Gpu("RTX 3060 12 GB", 11.3, "bf16", (8, 6)), Gpu("T4 16 GB", 14.6, "fp16", (7, 5), 0.54),
               Gpu("RTX 4060 Ti 16 GB", 15.3, "bf16", (8, 9)), Gpu("L4 24 GB", 21.9, "bf16", (8, 9), 0.71),
               Gpu("A100 40 GB", 39.0, "bf16", (8, 0), 3.67), Gpu("A100 80 GB", 78.7, "bf16", (8, 0), 5.07),
               Gpu("H100 80 GB", 78.7, "bf16", (9, 0), 11.03))
HOST_BASELINE_BYTES = int(1.2 * GIB)


@dataclass(frozen=True)
class GpuPlan:
    gpu: Gpu
    plan: MemoryPlan | None  # None: nothing fits, or the GPU cannot run the settings
    estimate: MemoryEstimate | None
    problem: str = ""        # why nothing fits (NoPlanFits' message)
    cannot_run: str = ""     # why the GPU cannot run the settings (a precision it lacks)
    precision: str = "bf16"  # the mixed precision on this GPU
    sharded_processes: int = 0  # --shard: the processes on each machine (0: not sharded)

    @property
    def host_bytes(self) -> int:
        return self._host(copy=False)

    @property
    def host_bytes_with_copy(self) -> int:
        return self._host(copy=not self.sharded_processes)  # a sharded commit takes no host copy

    def _host(self, copy: bool) -> int:
        if self.estimate is None:
            return 0
        return host_peak_bytes(self.estimate, copy) * max(1, self.sharded_processes)

    @property
    def base(self) -> str:
        """What the frozen weights are held in."""
        chosen = self.plan.base_precision if self.plan else "auto"
        return chosen if chosen != "auto" else {"no": "fp32"}.get(self.precision, self.precision)


def host_peak_bytes(estimate: MemoryEstimate, copy: bool) -> int:
    """The host's peak (see the module's docstring), with a checkpoint's host copy where `copy`."""
    loading = estimate.model_bytes + estimate.largest_layer_bytes
    training = estimate.offloaded_bytes + (estimate.checkpoint_bytes if copy else 0)
    return HOST_BASELINE_BYTES + max(loading, training)


def plans_on_common_gpus(model_path: str, training: TrainingSettings, runtime: RuntimeSettings,
                         resolution: int, prior: bool, eight_bit: bool,
                         gpus: tuple[Gpu, ...] = COMMON_GPUS) -> list[GpuPlan]:
    """The plan --memory auto picks on each of `gpus` (with 8-bit AdamW and quantised bases where
    `eight_bit`); a row saying why where the GPU lacks a precision the settings ask for; the
    estimate's ConfigError for settings the model's family cannot train."""
    estimates: dict[str, MemoryEstimate] = {}

    def estimate(t: TrainingSettings, r: RuntimeSettings) -> MemoryEstimate:
        key = t.model_dump_json() + r.model_dump_json()
        if key not in estimates:
            estimates[key] = estimate_training_memory(model_path, t, resolution, r, prior)
        return estimates[key]

    rows, sharded = [], processes_per_machine(training, runtime) if training.shard else 0
    for gpu in gpus:
        t = training.model_copy(update={"mixed_precision": gpu.precision}) \
            if training.mixed_precision == "auto" else training
        problem = precision_problem(t.mixed_precision, t.base_precision, gpu.capability) \
            or offload_problem(runtime.offload, t.gpus, "cuda") or shard_problem(t)
        if problem:
            rows.append(GpuPlan(gpu, None, None, cannot_run=problem, precision=t.mixed_precision))
            continue
        try:
            plan = choose_plan(lambda a, b: estimate(a, b).peak_bytes, t, runtime,
                               usable_bytes(int(gpu.free_gib * GIB)), eight_bit)
        except NoPlanFits as exc:
            rows.append(GpuPlan(gpu, None, None, str(exc), precision=t.mixed_precision))
            continue
        rows.append(GpuPlan(gpu, plan, estimate(*plan.apply(t, runtime)), precision=t.mixed_precision,
                            sharded_processes=sharded))
    return rows


def shard_problem(training: TrainingSettings) -> str:
    """Why --shard cannot train with the precision a GPU gives it (fp16 where it has no bf16)."""
    needs = training.shard_needs() if training.shard else []
    return f"--shard needs {needs[0]}" if needs else ""


def processes_per_machine(training: TrainingSettings, runtime: RuntimeSettings) -> int:
    return training.gpus // runtime.nnodes


def plan_table(rows: list[GpuPlan], sharded_over: int = 0) -> list[str]:
    """The table `dreambooth plan` prints; `sharded_over`: --shard's --gpus (peaks are per GPU)."""
    peak, host = "GPU peak (usable)", "host needs (with copy)"
    if sharded_over:
        peak, host = f"GPU peak, each of {sharded_over} (usable)", "host needs per machine (with copy)"
    lines = [f"| GPU | --memory auto plan | frozen base | offload | {peak} | {host} | checkpoint |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.plan is None:
            why = f"cannot run: {row.cannot_run.split(';')[0]}" if row.cannot_run else "does not fit"
            lines.append(f"| {row.gpu.name} | {why} | - | - | - | - | - |")
            continue
        lines.append(f"| {row.gpu.name} | {row.plan.describe()} | {row.base} | "
                     f"{'yes' if row.plan.offload else 'no'} "
                     f"| {row.plan.estimated_peak_bytes / GIB:.1f} GiB "
                     f"({row.plan.budget_bytes / GIB:.1f}) | {row.host_bytes / GIB:.1f} GiB "
                     f"({row.host_bytes_with_copy / GIB:.1f}) | "
                     f"{row.estimate.checkpoint_bytes / GIB:.2f} GiB |")
    return lines


def cost_lines(rows: list[GpuPlan], gpus: int, steps: int | None,
               steps_per_second: float | None) -> list[str]:
    """What `gpus` of each GPU the settings fit cost an hour, and the run at a measured speed."""
    priced = [row for row in rows if row.plan is not None and row.gpu.dollars_per_hour is not None]
    if not priced:
        return []
    hourly = [(row.gpu.name, gpus * row.gpu.dollars_per_hour) for row in priced]
    lines = [f"Cost of {gpus} GPU{'s' if gpus > 1 else ''} ({PRICES}): "
             + ", ".join(f"{name} ${dollars:.2f}/h" for name, dollars in hourly) + "."]
    if steps_per_second is None or steps is None:
        lines.append("The run's cost is these times its hours: give --steps and --steps-per-second (a speed "
                     "measured with these settings, e.g. by benchmarks/gpu_check.py) to see it.")
        return lines
    hours = steps / steps_per_second / 3600
    lines.append(f"At {steps_per_second:g} steps/s, {steps} steps take {hours:.2f} h: "
                 + ", ".join(f"{name} ${dollars * hours:.2f}" for name, dollars in hourly) + ".")
    return lines
