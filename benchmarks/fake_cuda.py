"""What the CUDA dry run needs besides the project's own code: a process on the fake CUDA
runtime, checks for the faults fake tensors let through, and the fault a case ended in.

Fake tensors (torch's FakeTensorMode) compute shapes, dtypes and devices without data, and
../shared/fakecuda makes `torch.cuda` answer as one sm_90 GPU. Together they catch a tensor
left on the CPU, the dtype faults torch's meta functions check, and host syncs that read a
value (`.item()`, `bool()`). `KernelChecks` adds what real kernels refuse and fake tensors
accept (fakecuda's README lists them): a dtype mix in a matrix product or a convolution without
bias, a CUDA index into a CPU tensor, and a copy from the GPU to the host inside the step.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_leaves

REPO = Path(__file__).resolve().parent.parent
FAKECUDA_SOURCE = Path(os.environ.get("FAKECUDA_SOURCE", REPO.parent / "shared" / "fakecuda"))
FAKECUDA_BUILD = REPO / ".fakecuda"
PROJECT_PACKAGES = ("dreambooth_core", "flows", "tasks")

aten = torch.ops.aten
# Real kernels want one dtype across these inputs; their meta functions do not check it.
SAME_DTYPE = {aten.mm.default: (0, 1), aten.addmm.default: (0, 1, 2), aten.bmm.default: (0, 1),
              aten.baddbmm.default: (0, 1, 2), aten.convolution.default: (0, 1, 2),
              aten.index_put_.default: (0, 2), aten.index_put.default: (0, 2)}
# (tensor argument, index argument): an index on the GPU into a tensor on the host fails on a GPU.
INDEXED = {aten.index.Tensor: (0, 1), aten.index_put_.default: (0, 1), aten.index_put.default: (0, 1),
           aten.index_select.default: (0, 2), aten.gather.default: (0, 2), aten.embedding.default: (0, 1),
           aten.take.default: (0, 1)}
COPIES = {aten._to_copy.default, aten.copy_.default}
# Host syncs inside the step that are torch's design, not ours: (file, function) of the frame that
# reads the value, and why. GradScaler reads whether a gradient overflowed before calling an
# optimizer that cannot take the scale in its kernel (bitsandbytes; torch's fused AdamW can).
KNOWN_SYNCS = {
    ("grad_scaler.py", "_maybe_opt_step"): "GradScaler.step reads found_inf before a non-fused optimizer's "
                                           "step (fp16 with 8-bit AdamW): one sync per step",
    # Ours, once per run: the first step after the text-encoder phase encodes each caption with the
    # frozen encoders and moves them to host memory (training/data/text_embeddings.py).
    ("trainer.py", "_freeze_conditioning"): "the first step after the text-encoder phase moves the frozen "
                                            "text encoders to host memory: once per run"}


class KernelFault(RuntimeError):
    """What a real kernel would have refused, or a wait on the GPU inside the step."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class KernelChecks(TorchDispatchMode):
    """Raises KernelFault for the faults fake tensors accept. Reading a value and copying to
    the host are host syncs while `in_step` is set; outside the step they are by design (the
    chunk's mean loss, a checkpoint's host copy), and a value read there is answered with 0,
    as a fake tensor has none. `known_syncs` collects the reads of KNOWN_SYNCS, also answered 0."""

    def __init__(self) -> None:
        super().__init__()
        self.in_step = False
        self.known_syncs: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:
            return self._value_read(args[0])
        self._check_dtypes(func, args)
        self._check_index_devices(func, args)
        if self.in_step and func in COPIES:
            self._check_copy(func, args, kwargs)
        return func(*args, **kwargs)

    def _value_read(self, tensor: torch.Tensor):
        if self.in_step and tensor.device.type == "cuda":
            reason = _known_sync()
            if reason is None:
                raise KernelFault("host sync", f"a {str(tensor.dtype).removeprefix('torch.')} value read back "
                                               "from the GPU inside the training step (.item(), bool(), float())")
            self.known_syncs.add(reason)
        return False if tensor.dtype == torch.bool else 0

    @staticmethod
    def _check_dtypes(func, args) -> None:
        tensors = [a for i in SAME_DTYPE.get(func, ()) if i < len(args)
                   for a in tree_leaves(args[i]) if isinstance(a, torch.Tensor) and a.is_floating_point()]
        if len({t.dtype for t in tensors}) > 1:
            dtypes = ", ".join(str(t.dtype).removeprefix("torch.") for t in tensors)
            raise KernelFault("dtype mix", f"{func.__name__} of {dtypes} (a real kernel refuses it)")

    @staticmethod
    def _check_index_devices(func, args) -> None:
        if func not in INDEXED:
            return
        source, index = INDEXED[func]
        if len(args) <= index or not isinstance(args[source], torch.Tensor) or args[source].device.type != "cpu":
            return
        if any(isinstance(i, torch.Tensor) and i.device.type == "cuda" for i in tree_leaves(args[index])):
            raise KernelFault("CUDA index into a CPU tensor", f"{func.__name__} indexes a CPU tensor with a "
                                                              "CUDA tensor (a real kernel refuses it)")

    def _check_copy(self, func, args, kwargs) -> None:
        """A copy to the host queued with non_blocking=True (--offload's write-back into page-locked
        memory, on its copy stream) does not make the CPU wait; fake tensors cannot tell page-locked
        memory, so such a copy is trusted to go there."""
        if func is aten.copy_.default:
            target, source = args[0], args[1]
            to_host = target.device.type == "cpu" and source.device.type == "cuda"
            waits = not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
        else:
            device = kwargs.get("device")
            to_host = args[0].device.type == "cuda" and device is not None and torch.device(device).type == "cpu"
            waits = not kwargs.get("non_blocking", False)
        to_host = to_host and waits
        if to_host and (reason := _known_sync()) is not None:
            self.known_syncs.add(reason)
        elif to_host:
            raise KernelFault("host sync", "a copy from the GPU to the host inside the training step "
                                           "(the CPU waits for the GPU)")


def _known_sync() -> str | None:
    """Why the sync being made is a known one (KNOWN_SYNCS), or None."""
    return next((why for (file, function), why in KNOWN_SYNCS.items() if _called_from(file, function)), None)


def _called_from(file: str, function: str) -> bool:
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == function and frame.f_code.co_filename.endswith(file):
            return True
        frame = frame.f_back
    return False


def marking_the_step(step, checks: KernelChecks):
    """`Trainer.step`, with `checks.in_step` set while it runs."""
    def marked(*args, **kwargs):
        checks.in_step = True
        try:
            return step(*args, **kwargs)
        finally:
            checks.in_step = False
    return marked


def place_fake(tensor: torch.Tensor, data: torch.Tensor) -> None:
    """`tensor.data = data` on fake tensors: the fake tensor is told its new device, which it
    would otherwise keep reporting (and computing on)."""
    tensor.data = data
    if hasattr(data, "fake_device"):
        tensor.fake_device = data.fake_device


@contextlib.contextmanager
def fake_module_moves():
    """`Module.to` on fake parameters: torch swaps the tensors, which the fake mode refuses
    ("Couldn't swap"); this moves each parameter and buffer in place instead, as torch's own
    non-swapping path does (`param.data = ...`), and tells the fake tensor its new device."""
    original = torch.nn.Module.to

    def move_in_place(module, *args, **kwargs):
        device, dtype, _, memory_format = torch._C._nn._parse_to(*args, **kwargs)
        for tensor in [*module.parameters(), *module.buffers()]:
            if is_traceable_wrapper_subclass(tensor.data):  # a quantised weight (torchao): not cast
                # `.data =` would keep the old inner tensors (on the CPU): swap, as torch itself does
                moved = tensor.data.to(device or tensor.device)
                torch.utils.swap_tensors(tensor, torch.nn.Parameter(moved, requires_grad=tensor.requires_grad))
                continue
            moved = tensor.data.to(device or tensor.device,
                                   dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype)
            if memory_format is not None and moved.dim() == 4:
                moved = moved.contiguous(memory_format=memory_format)
            place_fake(tensor, moved)
        return module

    torch.nn.Module.to = move_in_place
    try:
        yield
    finally:
        torch.nn.Module.to = original


@dataclass(frozen=True)
class Fault:
    kind: str
    message: str
    frame: str  # the innermost frame of the project's code: "path:line in function"

    def __str__(self) -> str:
        return f"{self.kind}: {self.message} at {self.frame}"


def classify(exc: BaseException) -> Fault:
    from torch._subclasses.fake_tensor import (DataDependentOutputException, DynamicOutputShapeException,
                                               FakeTensorDeviceMismatchError)

    if isinstance(exc, KernelFault):
        kind, message = exc.kind, str(exc).split(": ", 1)[1]
    elif isinstance(exc, FakeTensorDeviceMismatchError):
        kind, message = "device mismatch", str(exc).splitlines()[0]
    elif isinstance(exc, (DataDependentOutputException, DynamicOutputShapeException)):
        kind, message = "host sync", f"{exc} reads a value computed on the GPU (the CPU waits for it)"
    else:
        kind, message = type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""
    return Fault(kind, message[:300], project_frame(exc))


def project_frame(exc: BaseException) -> str:
    """The innermost frame of the project's own packages (a module replaced from a copy counts
    by its module name) in the exception's traceback; else the innermost of this repository's
    (the dry run's own checks)."""
    project = repository = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        path = Path(frame.f_code.co_filename)
        where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{line} in {frame.f_code.co_name}"
        if frame.f_globals.get("__name__", "").split(".")[0] in PROJECT_PACKAGES:
            project = where
        elif path.is_relative_to(REPO):
            repository = where
    return project or repository or "no frame of this repository"


def replace_module(name: str, path: Path) -> None:
    """Import `path` as module `name` before anything else imports it (a copy with a fault
    injected, for the dry run's own tests). Its package is imported first: a package that imports
    the module itself (dreambooth_core.families' registry of family instances) would otherwise meet
    the copy half-run. Where the package took objects from the original, it is run again, so it
    holds the copy's."""
    parent, _, child = name.rpartition(".")
    package = importlib.import_module(parent) if parent else None
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if package is not None:
        setattr(package, child, module)
        if any(_defined_in(value, name) for key, value in vars(package).items() if key != child):
            importlib.reload(package)


def _defined_in(value, module: str) -> bool:
    """Whether `value` is a class or function of `module`, or an instance of one of its classes."""
    owner = value if inspect.isclass(value) or inspect.isfunction(value) else type(value)
    return getattr(owner, "__module__", None) == module


def on_fake_cuda() -> bool:
    return "fakecudart" in os.environ.get("LD_PRELOAD", "")


def fake_cuda_environment() -> dict[str, str]:
    """The environment of a process on the fake CUDA runtime, built from ../shared/fakecuda
    (a second with gcc). Raises RuntimeError with the reason when it cannot be."""
    if torch.version.cuda is None:
        raise RuntimeError(f"torch {torch.__version__} is a CPU build: the dry run needs PyPI's CUDA build "
                           "(./setup.sh --cuda-dry-run makes .cuda-venv with it)")
    if not (FAKECUDA_SOURCE / "build.sh").is_file():
        raise RuntimeError(f"no fake CUDA runtime at {FAKECUDA_SOURCE} (set FAKECUDA_SOURCE to its folder)")
    if shutil.which("gcc") is None:
        raise RuntimeError("gcc is needed to build the fake CUDA runtime")
    _build_fake_cuda()
    library_path = os.environ.get("LD_LIBRARY_PATH")
    driver = str(FAKECUDA_BUILD / "driver")
    return {**os.environ, "LD_PRELOAD": str(FAKECUDA_BUILD / "libfakecudart.so"),
            "LD_LIBRARY_PATH": f"{driver}:{library_path}" if library_path else driver}


def _build_fake_cuda() -> None:
    """Build into a folder of this process's own, then rename the libraries into FAKECUDA_BUILD:
    gcc writing in place would change them under a dry run already running on them (pytest -n)."""
    scratch = FAKECUDA_BUILD / f"build-{os.getpid()}"
    try:
        built = subprocess.run(["bash", str(FAKECUDA_SOURCE / "build.sh")], capture_output=True, text=True,
                               env={**os.environ, "PYTHON": sys.executable, "FAKECUDA_OUT": str(scratch)})
        if built.returncode != 0:
            raise RuntimeError(f"building the fake CUDA runtime failed: {built.stderr.strip()[-500:]}")
        (FAKECUDA_BUILD / "driver").mkdir(exist_ok=True)
        for library in ("libfakecudart.so", "driver/libcuda.so.1"):
            os.replace(scratch / library, FAKECUDA_BUILD / library)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def exit_now(code: int) -> None:
    """End the process at once: the autograd engine's device thread aborts a normal exit on
    the fake runtime (fakecuda's README)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
