"""Which device trains, in which precision, on how many processes."""

from __future__ import annotations

import torch

from dreambooth_core.errors import ConfigError
from dreambooth_core.training.torchrun_env import torchrun_rank, torchrun_world


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(requested: str, device: torch.device) -> str:
    """--mixed-precision auto: bf16 on GPUs that have it, fp16 on older ones, none on the CPU."""
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def check_processes(gpus: int, device: torch.device) -> None:
    if torchrun_rank() is not None:  # torchrun decided the processes, on one node or several
        if gpus != torchrun_world():
            raise ConfigError(f"--gpus {gpus}: torchrun started {torchrun_world()} training processes; "
                              f"pass --gpus {torchrun_world()}.")
        return
    if gpus > 1 and device.type == "cuda" and torch.cuda.device_count() < gpus:
        raise ConfigError(f"--gpus {gpus} needs {gpus} GPUs; this machine has "
                          f"{torch.cuda.device_count()}. Pass --gpus {max(1, torch.cuda.device_count())}.")

