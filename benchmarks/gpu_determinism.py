"""pytest plugin (-p gpu_determinism) for gpu_check's test row: CUDA kernels in a fixed order.

Without it, kernels that add with atomics (the embedding's backward, some cuDNN
convolution weight gradients) and cuDNN's benchmark mode (which picks kernels by timing)
can round differently from run to run, and a resumed run would not equal an
uninterrupted one bit for bit. cuBLAS needs CUBLAS_WORKSPACE_CONFIG=:4096:8 as well
(gpu_check sets it). warn_only: an operation without a deterministic kernel warns, and
the bit-exactness tests then say whether it mattered.
"""

import torch


def pytest_configure(config) -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
