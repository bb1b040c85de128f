"""Which device trains, in which precision, on how many processes."""

from __future__ import annotations

import torch

from dreambooth_core.errors import ConfigError


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
    """--mixed-precision auto: bf16 on GPUs that have it, fp16 on older ones, none on the CPU."""
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def check_processes(gpus: int, device: torch.device) -> None:
    """`gpus`: the processes of this machine."""
    if gpus > 1 and device.type == "cuda" and torch.cuda.device_count() < gpus:
        raise ConfigError(f"--gpus {gpus} needs {gpus} GPUs; this machine has "
                          f"{torch.cuda.device_count()}. Pass --gpus {max(1, torch.cuda.device_count())}.")

