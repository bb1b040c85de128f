"""--memory auto: the fastest training plan whose estimated peak fits the GPU.

The concessions, in the order they are tried (each costs more speed than the one
before; the first plan that fits wins):
1. none: the settings as given;
2. 8-bit AdamW (bitsandbytes): a quarter of the optimizer's memory, a few percent slower (not with
   --shard: it does not take sharded weights);
3. gradient checkpointing: activations recomputed in the backward pass, about a third slower;
4. both;
5. then 1-4 with the frozen base quantised, int8 and then nf4 (bitsandbytes, as QLoRA): each
   matrix product dequantises its weight first (nf4 about a third slower again; LLM.int8 is no
   faster than nf4, but int8 keeps the frozen weights nearer to the model's own, so it comes
   first). Tried only where the denoiser is frozen (lora, textual inversion: a full DreamBooth
   cannot quantise what it trains) and --base-precision is auto. fp8 takes int8's memory and
   needs an Ada or Hopper GPU and another library: it is the user's choice, never the plan's;
6. then 1-5 with the optimizer step in the backward pass (step_in_backward.py): no memory for
   the model's gradients, slower optimizer steps (a weight at a time), each gradient clipped on
   its own. Tried only where it can run: bf16 or fp32, no gradient accumulation, one process;
7. last, 1-6 with --offload: the trained model's blocks, their gradients and optimizer state in
   host memory, streamed to the GPU block by block (each step waits on PCIe transfers, the
   slowest by far). Tried only for full DreamBooth on one GPU (offload_problem says why not else).
A concession the settings already make is not tried again. --shard is no concession of the plan's
(it needs the GPUs the user chose): with it, every plan's peak is one GPU's of the --gpus
(sharded_estimate.py). The plan is decided once
per session and recorded in session.json, so that a resume elsewhere trains the same
way (a session that started with --memory none records none, and goes on as given);
8-bit AdamW, a quantised base and the step in backward change the trained weights
slightly (a quantised base is in the training fingerprint), checkpointing and offload do not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from dreambooth_core.config import (
    DreamBoothConfig,
    MemoryPlan,
    RuntimeSettings,
    TrainingSettings,
    offload_needs,
)
from dreambooth_core.errors import ConfigError
from dreambooth_core.training.devices import offload_problem, resolve_device, resolve_precision
from dreambooth_core.training.memory.estimate import estimate_training_memory

GIB = 2**30
# Left free besides the estimate: allocator fragmentation and caching, kernels' workspaces
# (cuDNN, cuBLAS), which the estimate does not count.
USABLE_FRACTION = 0.92
RESERVE_BYTES = GIB // 2


QUANTISED_BASES = ("int8", "nf4")  # the plan's, in the order tried


def as_given(training: TrainingSettings, runtime: RuntimeSettings) -> MemoryPlan:
    return MemoryPlan(optimizer=training.optimizer, gradient_checkpointing=runtime.gradient_checkpointing,
                      step_in_backward=training.step_in_backward, base_precision=training.base_precision,
                      offload=runtime.offload)


def candidates(training: TrainingSettings, runtime: RuntimeSettings, eight_bit: bool) -> list[MemoryPlan]:
    """The plans to try, fastest first (see the module's docstring). `training.mixed_precision`:
    what it resolves to on the GPU planned for; `eight_bit`: bitsandbytes is there (8-bit AdamW
    and the quantised bases)."""
    given = as_given(training, runtime)
    optimizers = [given.optimizer] + (["adamw-8bit"] if eight_bit and not training.shard else [])
    bases = [given.base_precision] + (list(QUANTISED_BASES) if eight_bit and can_quantise_base(training)
                                      else [])
    in_backward = [given.step_in_backward] + ([True] if can_step_in_backward(training) else [])
    offload = [given.offload] + ([True] if can_offload(training, runtime) else [])
    return [MemoryPlan(optimizer=o, gradient_checkpointing=c, step_in_backward=b, base_precision=q, offload=f)
            for f in dict.fromkeys(offload) for b in dict.fromkeys(in_backward) for q in dict.fromkeys(bases)
            for c in dict.fromkeys([given.gradient_checkpointing, True]) for o in dict.fromkeys(optimizers)
            if b or not f]  # offload updates each block in the backward pass (config.offload_needs)


def can_step_in_backward(training: TrainingSettings) -> bool:
    return not training.step_in_backward_needs()


def can_quantise_base(training: TrainingSettings) -> bool:
    """A quantised base is the plan's to choose where the denoiser is frozen and the user left it auto."""
    return training.base_precision == "auto" and training.method in ("lora", "textual-inversion")


def can_offload(training: TrainingSettings, runtime: RuntimeSettings) -> bool:
    """Block swap is for full fine-tunes, on one GPU (devices.offload_problem), with the step in
    backward it needs and nothing it cannot train with (config.offload_needs)."""
    needs = offload_needs(training.model_copy(update={"step_in_backward": True}), runtime)
    return (can_step_in_backward(training) and not needs
            and offload_problem(True, training.gpus, "cuda") is None)


def usable_bytes(free_bytes: int) -> int:
    return int(free_bytes * USABLE_FRACTION) - RESERVE_BYTES


class NoPlanFits(ConfigError):
    """No candidate's estimate is within the GPU's budget (an estimate's own error is not this)."""


Estimator = Callable[[TrainingSettings, RuntimeSettings], int]  # peak bytes of one plan's settings


def choose_plan(estimate: Estimator, training: TrainingSettings, runtime: RuntimeSettings,
                budget_bytes: int, eight_bit: bool) -> MemoryPlan:
    """The first candidate whose estimated peak is within `budget_bytes`."""
    tried = []
    for plan in candidates(training, runtime, eight_bit):
        peak = estimate(*plan.apply(training, runtime))
        tried.append((plan, peak))
        if peak <= budget_bytes:
            return plan.model_copy(update={"estimated_peak_bytes": peak, "budget_bytes": budget_bytes})
    raise NoPlanFits(nothing_fits(tried, training, budget_bytes, eight_bit))


def nothing_fits(tried: list[tuple[MemoryPlan, int]], training: TrainingSettings, budget_bytes: int,
                 eight_bit: bool) -> str:
    estimates = "; ".join(f"{plan.describe()}: {peak / GIB:.1f} GiB" for plan, peak in tried)
    advice = ["--method lora (a few GiB)" if training.method == "dreambooth" else None,
              "--text-encoder-steps 0" if training.trains_text_encoder else None,
              "a lower --resolution", "--batch-size 1" if training.batch_size > 1 else None,
              None if eight_bit else "pip install bitsandbytes (for 8-bit AdamW and a quantised base)",
              "a GPU with more memory"]
    return (f"no memory plan fits the {budget_bytes / GIB:.1f} GiB this GPU has usable for training "
            f"(estimated peaks: {estimates}). Try {', '.join(a for a in advice if a)}; or pass "
            "--memory none to train with the settings as given anyway.")


def check_fits(plan: MemoryPlan, peak_bytes: int, budget_bytes: int, session: str) -> None:
    """A recorded plan on this GPU: refused when its estimate is over what is usable here."""
    if peak_bytes > budget_bytes:
        raise ConfigError(
            f"session {session!r} trains with {plan.describe()}, estimated at {peak_bytes / GIB:.1f} "
            f"GiB, but this GPU has {budget_bytes / GIB:.1f} GiB usable. Resume it on a GPU with more "
            "free memory (stop other programs using this one), or start a new --session, which "
            "chooses a plan for this GPU.")


@functools.cache
def eight_bit_problem() -> str | None:
    """Why 8-bit AdamW cannot be planned with here (None: it can): bitsandbytes missing, or failing
    to load. Plans leave out a concession whose library is missing, and say so with this."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError, or a library that fails to load
        return ("8-bit AdamW and a quantised base left out: bitsandbytes does not import here "
                f"({type(exc).__name__}). Install it (pip install bitsandbytes, or this project's [gpu] "
                "extra, which the Docker image has) to plan with them.")
    return None


def eight_bit_available() -> bool:
    return eight_bit_problem() is None


@dataclass(frozen=True)
class GpuMemory:
    free_bytes: int
    precision: str  # what --mixed-precision resolves to there


def detect_gpu(config: DreamBoothConfig) -> GpuMemory | None:
    device = resolve_device(config.runtime.device)
    if device.type != "cuda":
        return None
    return GpuMemory(torch.cuda.mem_get_info(device)[0],
                     resolve_precision(config.training.mixed_precision, device))


def settle_memory_plan(config: DreamBoothConfig, recorded: MemoryPlan | None, started: bool,
                       model_path: str, resolution: int, prior: bool,
                       gpu: GpuMemory | None) -> MemoryPlan | None:
    """The plan this run trains with: the session's recorded one (checked against this GPU),
    else a new choice for this GPU (`gpu`: None on the CPU, where nothing is changed); None for
    --memory none and for sessions that started training with --memory none (they go on as they
    began: a plan chosen now could change the trained weights)."""
    training, runtime = config.training, config.runtime
    if runtime.memory == "none" or (recorded is None and started):
        return None
    if gpu is None:
        return recorded or as_given(training, runtime)
    budget = usable_bytes(gpu.free_bytes)

    def estimate(t: TrainingSettings, r: RuntimeSettings) -> int:
        t = t.model_copy(update={"mixed_precision": gpu.precision})
        return estimate_training_memory(model_path, t, resolution, r, prior).peak_bytes

    if recorded is not None:
        check_fits(recorded, recorded.estimated_peak_bytes or estimate(*recorded.apply(training, runtime)),
                   budget, config.session)
        return recorded
    on_this_gpu = training.model_copy(update={"mixed_precision": gpu.precision})
    return choose_plan(estimate, on_this_gpu, runtime, budget, eight_bit_available())


def out_of_memory_advice(training: TrainingSettings, runtime: RuntimeSettings, plan: MemoryPlan | None,
                         resolution: int, step: int | None) -> str:
    """The one paragraph a CUDA out-of-memory error ends with."""
    where = f"at step {step}" if step is not None else "while loading the model"
    tries = [c for c, on in (("--optimizer adamw-8bit", training.optimizer != "adamw-8bit"),
                             ("--gradient-checkpointing", not runtime.gradient_checkpointing),
                             ("--base-precision nf4", can_quantise_base(training)),
                             ("--step-in-backward", training.method == "dreambooth"
                              and not training.step_in_backward and can_step_in_backward(training)),
                             ("--offload", can_offload(training, runtime) and not runtime.offload),
                             ("--text-encoder-steps 0", training.trains_text_encoder),
                             ("--method lora", training.method == "dreambooth"),
                             ("--batch-size 1", training.batch_size > 1),
                             (f"--resolution {max(256, resolution - 128)}", resolution > 256)) if on]
    if plan is not None and plan.budget_bytes:
        why = (f"--memory auto chose {plan.describe()}, estimated at "
               f"{plan.estimated_peak_bytes / GIB:.1f} GiB of the {plan.budget_bytes / GIB:.1f} GiB that "
               "were usable: another program may be using the GPU now (nvidia-smi lists them); close it "
               "and rerun.")
    else:
        why = ("This run trained with the settings as given (--memory none, now or when the session "
               "started); --memory auto (the default) picks concessions that fit from an estimate, in a "
               "new --session.")
    return (f"the GPU ran out of memory {where} ({training.method}, {resolution} px, batch "
            f"{training.batch_size}). {why} Concessions to try, in this order: "
            f"{', '.join(tries) or 'a GPU with more memory'}. Nothing committed is lost: rerun the same "
            "command to resume from the last committed checkpoint (settings that change the trained "
            "weights need a new --session).")
