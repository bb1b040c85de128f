"""Peak memory of training, measured by running real training steps on fake tensors.

The model is built from its configs inside torch's FakeTensorMode: every tensor
has its shape, dtype and device but no storage, so a full-size architecture of any
family (SD 1.5 in seconds, FLUX.1 in about 20 s) "trains" on a CPU without a byte of
weights. `LiveTensorBytes` sees every tensor an operation creates and keeps the sum
of the storages still alive: its high-water mark over a step of each phase (text
encoder training, then the denoiser only) is the estimate. The same tracker on real
tensors (`fake=False`) measures what a small model really allocates, which is how
the estimate is checked.

Every part counts, as the Trainer holds it on the GPU: it moves the denoiser, the VAE
and all text encoders there, so the frozen ones (FLUX.1's T5-XXL, klein's Qwen3) stay
beside the denoiser through its steps although their embeddings are cached.

Not counted: the CUDA context and allocator caching (a few hundred MB on a GPU),
and kernels' workspaces, which differ between CPU and GPU kernels. 8-bit AdamW
(bitsandbytes, CUDA only) cannot run here: its state is laid out as bitsandbytes
lays it out (one byte per moment and element, a float32 scale per block of 256,
32-bit moments for tensors under 4096 elements) by a stand-in that allocates it.
"""

from __future__ import annotations

import contextlib
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from dreambooth_core.config import RuntimeSettings, TrainingSettings
from dreambooth_core.families import ModelParts, load_model_parts, write_config_folder
from dreambooth_core.training import trainer as trainer_module


@dataclass(frozen=True)
class MemoryEstimate:
    peak_bytes: int        # the most held at once during the steps
    between_steps: int     # held after a step: weights, gradients kept, optimizer state, caches
    seconds: float         # how long the estimate took
    checkpoint_bytes: int = 0  # what a checkpoint holds: trained weights, optimizer state, EMA
    model_bytes: int = 0       # the model's weights as the Trainer holds them (frozen ones in half under autocast)


    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / 2**30


class LiveTensorBytes(TorchDispatchMode):
    """The bytes of tensor storage alive now, and the most alive at once, for tensors created
    by operations inside the mode (fake or real)."""

    def __init__(self) -> None:
        super().__init__()
        self.current = self.peak = 0
        self._seen: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_leaves(out):
            if isinstance(value, torch.Tensor):
                self._track(value.untyped_storage())
        return out

    def _track(self, storage) -> None:
        key = id(storage)
        if key in self._seen and self._seen[key]() is storage:
            return
        size = storage.nbytes()
        self.current += size
        self.peak = max(self.peak, self.current)
        self._seen[key] = weakref.ref(storage, lambda _, k=key, s=size: self._free(k, s))

    def _free(self, key: int, size: int) -> None:
        self.current -= size
        self._seen.pop(key, None)

    def reset_peak(self) -> None:
        self.peak = self.current


def build_parts(model_path: str | Path) -> ModelParts:
    """The model's parts from its configs, with freshly initialised (not loaded) weights."""
    return load_model_parts(model_path, torch.device("cpu"), weights=False)


def write_random_model(architecture: str, folder: Path) -> Path:
    """A diffusers folder of a published architecture (dreambooth_core.families.ARCHITECTURES) with
    random weights: the full-size model to benchmark, without a download."""
    write_config_folder(architecture, folder)
    parts = build_parts(folder)
    modules = {parts.family.denoiser: parts.denoiser, "vae": parts.vae, "text_encoder": parts.text_encoder,
               "text_encoder_2": parts.text_encoder_2}
    with torch.no_grad():
        for name, module in modules.items():
            if module is not None:
                module.save_pretrained(folder / name)
    return folder


def estimate_training_memory(model: str | Path | Callable[[], ModelParts], settings: TrainingSettings,
                             resolution: int, runtime: RuntimeSettings = RuntimeSettings(), prior: bool = False,
                             fake: bool = True) -> MemoryEstimate:
    """Peak bytes of training `model` (a diffusers folder, or a function that builds the parts
    from configs) with `settings` at `resolution` px: one step in the text-encoder phase when
    there is one, then one after it, with class images when `prior`."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    start = time.perf_counter()
    tracker = LiveTensorBytes()
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    runtime = runtime.model_copy(update={"compile": False})
    with mode, tracker, _fake_friendly(fake), _cpu_kernel_notices_hidden():
        parts = model() if callable(model) else build_parts(model)
        parts.family.check_settings(settings)  # what the family cannot train: its reason, not an estimate
        trainer = trainer_module.Trainer(parts, _examples(resolution, "shrk"), settings, total_steps=2,
                                         runtime=runtime, class_examples=_examples(resolution, "") if prior else ())
        trainer.scaler = torch.amp.GradScaler(enabled=False)  # fp16 loss scaling reads values; it holds ~no memory
        # Parts are built in fp32 and cast by the Trainer, which a real run does on the CPU before
        # moving them to the GPU: the GPU holds what the Trainer holds from here.
        tracker.reset_peak()
        model_bytes = _module_bytes(parts)
        steps = [0, settings.text_encoder_phase] if trainer.text_encoder_trains_at(0) else [0]
        for step in steps:
            trainer.step(step)
        between = tracker.current
        saved = _checkpoint_bytes(trainer)
    return MemoryEstimate(peak_bytes=tracker.peak, between_steps=between, seconds=time.perf_counter() - start,
                          checkpoint_bytes=saved, model_bytes=model_bytes)


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _checkpoint_bytes(trainer) -> int:
    state = [v for s in trainer.optimizer.state.values() for v in s.values()]
    return _bytes(trainer.trainables.named().values()) + _bytes(state) + _bytes((trainer.ema or {}).values())


def _module_bytes(parts: ModelParts) -> int:
    modules = (parts.denoiser, parts.vae, *parts.text_encoders)
    return sum(p.numel() * p.element_size() for m in modules for p in [*m.parameters(), *m.buffers()])


class EightBitAdamWState(torch.optim.Optimizer):
    """Allocates what bitsandbytes' AdamW8bit keeps per parameter, and leaves the weights alone
    (its update is one fused kernel without temporaries): for estimating memory only."""

    BLOCK, SMALLEST = 256, 4096

    def __init__(self, groups, lr: float):
        super().__init__(groups, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and not self.state[p]:
                    self.state[p] = self._state_for(p)

    def _state_for(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        if p.numel() < self.SMALLEST:
            return {"state1": torch.zeros_like(p, dtype=torch.float32),
                    "state2": torch.zeros_like(p, dtype=torch.float32)}
        blocks = -(-p.numel() // self.BLOCK)
        zeros = {"dtype": torch.float32, "device": p.device}
        return {"state1": torch.zeros_like(p, dtype=torch.uint8), "state2": torch.zeros_like(p, dtype=torch.uint8),
                "absmax1": torch.zeros(blocks, **zeros), "absmax2": torch.zeros(blocks, **zeros),
                "qmap1": torch.zeros(256, **zeros), "qmap2": torch.zeros(256, **zeros)}


def _examples(resolution: int, word: str) -> list:
    caption = f"a photo of {word} person" if word else "a photo of a person"
    return [trainer_module.Example(torch.zeros(1, 3, resolution, resolution), caption, "shrk") for _ in range(2)]


@contextlib.contextmanager
def _cpu_kernel_notices_hidden():
    """The steps run the CPU's kernels in place of the GPU's: torch's notice that a CPU kernel has no
    fused path for a half input beside an fp32 norm weight says nothing about the run estimated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
        yield


@contextlib.contextmanager
def _fake_friendly(fake: bool):
    """8-bit AdamW as its stand-in; and three things fake tensors cannot do, done otherwise:
    - which example a step trains on is read from a random draw's values: the draw runs on
      real tensors;
    - a noise scheduler reads values of the tables it builds (a flow-matching one, its smallest
      sigma): schedulers are built on real tensors (a few kB, never on the GPU);
    - a module of fake parameters cannot be moved with `.to()` (torch swaps the tensors, and
      the fake mode holds weak references to them): a move to the device and dtype the module
      has already (peft's, for new LoRA weights) returns the module as it is."""
    eight_bit = trainer_module._adamw_8bit
    trainer_module._adamw_8bit = lambda groups, settings, device: EightBitAdamWState(groups, settings.base_learning_rate)
    try:
        with _fake_moves(fake):
            yield
    finally:
        trainer_module._adamw_8bit = eight_bit


@contextlib.contextmanager
def _fake_moves(fake: bool):
    if not fake:
        yield
        return
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    draw, move = trainer_module.draw_micro_batch, torch.nn.Module.to
    scheduler = SchedulerMixin.__dict__["from_pretrained"]

    def real_draw(*args, **kwargs):
        with unset_fake_temporarily():
            return draw(*args, **kwargs)

    def real_scheduler(cls, *args, **kwargs):
        with unset_fake_temporarily():
            return scheduler.__func__(cls, *args, **kwargs)

    def move_unless_there(module, *args, **kwargs):
        device, dtype, _, memory_format = torch._C._nn._parse_to(*args, **kwargs)
        here = all((device is None or p.device == torch.device(device)) and (dtype is None or p.dtype == dtype)
                   for p in module.parameters())
        return module if here and memory_format is None else move(module, *args, **kwargs)

    trainer_module.draw_micro_batch, torch.nn.Module.to = real_draw, move_unless_there
    SchedulerMixin.from_pretrained = classmethod(real_scheduler)
    try:
        yield
    finally:
        trainer_module.draw_micro_batch, torch.nn.Module.to = draw, move
        SchedulerMixin.from_pretrained = scheduler
