"""Which device trains, in which precision, on how many processes."""

from __future__ import annotations

import torch

from dreambooth_core.config import offload_device_problem
from dreambooth_core.errors import ConfigError
from dreambooth_core.families.quantised import FP8_CAPABILITY, QUANTISED


def resolve_device(name: str) -> torch.device:
    """The device --device names (auto: CUDA when available), if torch can use it here; else a
    ConfigError naming the devices there are. Training and rendering run on the CPU or CUDA."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's own message lists every device type it was built to know
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r} is not a device this tool runs on. {_devices_here()} "
                          "Pass one of them, or --device auto (CUDA when available).")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: {_cuda_here()} {_devices_here()} Pass --device cpu, or "
                          "--device auto (CUDA when available).")
    return device


def _devices_here() -> str:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = ["cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(count)] if count else [])
    return f"Devices here: {', '.join(names)}."


def _cuda_here() -> str:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA, so it cannot use a GPU."
    if count == 0:
        return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU here: no NVIDIA "
                "GPU, or its driver is missing (nvidia-smi shows what the system sees).")
    return f"this machine has {count} CUDA GPU{'s' if count > 1 else ''}."


def resolve_precision(requested: str, device: torch.device) -> str:
    """--mixed-precision auto: bf16 on GPUs that have it, fp16 on older ones, none on the CPU.
    (torch.cuda.is_bf16_supported() also says yes where bf16 is only emulated, as on a T4.)"""
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "no"
    return "bf16" if device_capability(device) >= BF16_CAPABILITY else "fp16"


def check_processes(gpus: int, device: torch.device) -> None:
    """`gpus`: the processes of this machine."""
    if gpus > 1 and device.type == "cuda" and torch.cuda.device_count() < gpus:
        raise ConfigError(f"--gpus {gpus} needs {gpus} GPUs; this machine has "
                          f"{torch.cuda.device_count()}. Pass --gpus {max(1, torch.cuda.device_count())}.")



# -- what a device can run: one place for the precision and offload checks ----------------------

# Quantised bases whose library has a CPU path (torchao: int8 and fp8 weight-only); nf4 needs
# bitsandbytes' CUDA kernels. What each precision is and which library holds it: families/quantised.py.
RUNS_ON_CPU = ("int8", "fp8")
BF16_CAPABILITY = (8, 0)  # Ampere


def device_capability(device: torch.device) -> tuple[int, int] | None:
    """The GPU's CUDA compute capability; None on the CPU."""
    return torch.cuda.get_device_capability(device) if device.type == "cuda" else None


def precision_problem(mixed_precision: str, base_precision: str,
                      capability: tuple[int, int] | None) -> str | None:
    """Why --mixed-precision / --base-precision cannot run on a device of compute `capability`
    (None: the CPU), in the user's words; None where they can. Checked before any model loads."""
    where = ("the CPU" if capability is None
             else f"a GPU of compute capability {capability[0]}.{capability[1]}")
    if base_precision in QUANTISED and capability is None and base_precision not in RUNS_ON_CPU:
        cpu = " or ".join(f"--base-precision {p}" for p in RUNS_ON_CPU)
        return (f"--base-precision {base_precision} needs a CUDA GPU (its kernels run only there); this "
                "run trains on the CPU. "
                f"Use --base-precision auto{f' ({cpu} runs on the CPU)' if cpu else ''}, or train on a GPU.")
    if base_precision == "fp8" and capability is not None and capability < FP8_CAPABILITY:
        return ("--base-precision fp8 needs a GPU with fp8 (compute capability 8.9 or newer: Ada "
                f"Lovelace such as L4 or RTX 40xx, or Hopper such as H100); this run trains on {where}. "
                "Use --base-precision int8 (the same memory) or nf4.")
    for flag, value in (("--mixed-precision", mixed_precision), ("--base-precision", base_precision)):
        if value == "bf16" and capability is not None and capability < BF16_CAPABILITY:
            return (f"{flag} bf16 needs a GPU with bfloat16 (compute capability 8.0 or newer: A100, L4, "
                    f"RTX 30xx or later); this run trains on {where} (a T4 or older). Use {flag} fp16, "
                    "or auto.")
    return None


def offload_problem(offload: bool, gpus: int, device_type: str) -> str | None:
    """Why --offload cannot train with these settings; None where it can."""
    if not offload:
        return None
    if problem := offload_device_problem(device_type):
        return problem
    if gpus > 1:
        return (f"--offload cannot train with --gpus {gpus}: each process's DDP keeps every trained "
                "weight on its GPU to average gradients in buckets, and block swap moves them to the "
                "host. Use --offload with --gpus 1, or several GPUs without --offload.")
    return None


def check_device_settings(mixed_precision: str, base_precision: str, offload: bool, gpus: int,
                          device: torch.device) -> None:
    """A ConfigError for settings this device cannot train with (see precision_problem, offload_problem)."""
    problem = (precision_problem(mixed_precision, base_precision, device_capability(device))
               or offload_problem(offload, gpus, device.type))
    if problem:
        raise ConfigError(problem)
