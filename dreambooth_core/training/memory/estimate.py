"""Peak memory of training, measured by running real training steps on fake tensors.

The model is built from its configs inside torch's FakeTensorMode: every tensor
has its shape, dtype and device but no storage, so a full-size architecture of any
family (SD 1.5 in seconds, FLUX.1 in about 20 s) "trains" on a CPU without a byte of
weights. `LiveTensorBytes` sees every tensor an operation creates and keeps the sum
of the storages still alive: its high-water mark over a step of each phase (text
encoder training, then the denoiser only) is the estimate. The same tracker on real
tensors (`fake=False`) measures what a small model really allocates, which is how
the estimate is checked.

Every part counts as the Trainer holds it on the GPU (the denoiser, the VAE, the text
encoders), but for three things a run holds differently from what the steps allocate
here, counted from the settings (the behaviour itself lives in the Trainer and the
loaders; the estimate subtracts and adds the bytes each phase holds otherwise):
- a quantised base (--base-precision nf4/int8/fp8): the frozen linear layers of the denoiser
  and the text encoders at the bytes their quantised layout takes, plus the largest layer's
  dequantised copy a step computes with (quantised_bytes.py). Loading it quantises shard by
  shard onto the GPU: the host never holds those weights whole.
- the text encoders off the GPU: once the text side does not train and its embeddings are
  cached (--cache-text-embeddings, every method but textual inversion), every caption and
  class prompt is encoded once and the encoders leave the GPU (freed: the host does not keep
  them either); the denoiser's steps hold the cached embeddings instead. The encoding itself
  is a phase of its own: at the start of a run before the denoiser reaches the GPU, after a
  text encoder phase with everything there.
- --offload: the denoiser's blocks (SWAPPED_BLOCKS: its transformer and ResNet blocks) live in
  host memory with their gradients and optimizer state, and are streamed to the GPU as they are
  needed; the GPU holds the other layers and IN_FLIGHT blocks (the one computing and the next,
  arriving). Their bytes are what the host holds on top while training.

--shard (--gpus N): what one of the N GPUs holds, measured in a process of its own as rank 0 of
N with FSDP2 (estimate_training_memory says why measured); a "loading" phase is the denoiser
sharded as it reaches the GPU, block by block.

Not counted: the CUDA context and allocator caching (a few hundred MB on a GPU),
and kernels' workspaces, which differ between CPU and GPU kernels. 8-bit AdamW
(bitsandbytes, CUDA only) cannot run here: its state is laid out as bitsandbytes
lays it out (one byte per moment and element, a float32 scale per block of 256,
32-bit moments for tensors under 4096 elements) by a stand-in that allocates it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_leaves

from dreambooth_core.config import RuntimeSettings, TrainingSettings
from dreambooth_core.families import ModelParts, load_model_parts, write_config_folder
from dreambooth_core.training import trainer as trainer_module
from dreambooth_core.training.devices import QUANTISED
from dreambooth_core.training.distributed.sharding import local
from dreambooth_core.training.memory.fake_process_group import run_as_rank_0_of
from dreambooth_core.training.memory.frozen_weights import HALF, frozen_dtype
from dreambooth_core.training.trainer import LatentCache
from dreambooth_core.training.memory.quantised_bytes import kept_unquantised, quantised_layers


@dataclass(frozen=True)
class MemoryEstimate:
    peak_bytes: int        # the most held at once on the GPU, in any phase
    between_steps: int     # held after a step: weights, gradients kept, optimizer state, caches
    seconds: float         # how long the estimate took
    checkpoint_bytes: int = 0  # what a checkpoint holds: trained weights, optimizer state, EMA
    model_bytes: int = 0       # the model's weights as the host holds them before they reach the GPU
    quantised_bytes: int = 0   # the quantised layers' bytes (on the GPU only: loaded shard by shard)
    largest_layer_bytes: int = 0  # the largest quantised layer in fp32: what loading it converts at once
    offloaded_bytes: int = 0   # --offload: the blocks' weights, gradients and optimizer state on the host
    embedding_bytes: int = 0   # the cached text embeddings of every caption and class prompt
    encoder_bytes: int = 0     # the text encoders as the GPU holds them while they are there
    phase_peaks: dict[str, int] = field(default_factory=dict)  # peak of each phase ("text encoder", ...)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / 2**30


class LiveTensorBytes(TorchDispatchMode):
    """The bytes of tensor storage alive now, and the most alive at once, for tensors created
    by operations inside the mode (fake or real). A storage resized in place (FSDP2 frees a
    gathered weight by resizing its storage to 0 and gathers it again into the same storage)
    counts at its new size."""

    def __init__(self) -> None:
        super().__init__()
        self.current = self.peak = 0
        self._seen: dict[int, weakref.ref] = {}
        self._sizes: dict[int, int] = {}  # the bytes each seen storage counts now
        self._elsewhere: dict[int, weakref.ref] = {}  # storages held off the GPU (see forget)

    def __enter__(self):
        self._resize = resize = torch.UntypedStorage.resize_  # the C base's, or an outer tracker's

        def resize_followed(storage, size):
            out = resize(storage, size)
            self._resized(storage)
            return out

        torch.UntypedStorage.resize_ = resize_followed
        return super().__enter__()

    def __exit__(self, *exc):
        torch.UntypedStorage.resize_ = self._resize
        return super().__exit__(*exc)

    def forget(self, tensor: torch.Tensor) -> None:
        """`tensor` lives elsewhere (host memory) from now on: it counts no more, nor when an
        operation returns it again."""
        storage = tensor.untyped_storage()
        key = id(storage)
        ref = self._seen.pop(key, None)
        if ref is not None and ref() is storage:
            self.current -= self._sizes.pop(key)
        self._elsewhere[key] = weakref.ref(storage)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_leaves(out):
            for tensor in _data_tensors(value):
                self._track(tensor.untyped_storage())
        return out

    def _track(self, storage) -> None:
        key = id(storage)
        if any(key in seen and seen[key]() is storage for seen in (self._seen, self._elsewhere)):
            return
        self._sizes[key] = 0
        self._seen[key] = weakref.ref(storage, lambda _, k=key: self._free(k))
        self._resized(storage)

    def _resized(self, storage) -> None:
        key = id(storage)
        if not self.counts_storage(storage):
            return
        size = storage.nbytes()
        self.current += size - self._sizes[key]
        self._sizes[key] = size
        self.peak = max(self.peak, self.current)

    def _free(self, key: int) -> None:
        self.current -= self._sizes.pop(key, 0)
        self._seen.pop(key, None)

    def counts_storage(self, storage) -> bool:
        ref = self._seen.get(id(storage))
        return ref is not None and ref() is storage

    def counts(self, tensor: torch.Tensor) -> bool:
        return self.counts_storage(tensor.untyped_storage())

    def reset_peak(self) -> None:
        self.peak = self.current


def _data_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The tensors whose storage holds `tensor`'s data: a wrapper subclass's inner ones (a DTensor's
    local shard, made by operations the mode does not see), else `tensor`."""
    if not isinstance(tensor, torch.Tensor):
        return []
    if not is_traceable_wrapper_subclass(tensor):
        return [tensor]
    names, _ = tensor.__tensor_flatten__()
    return [inner for name in names for inner in _data_tensors(getattr(tensor, name))]


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
                             resolution: int, runtime: RuntimeSettings = RuntimeSettings(),
                             prior: bool = False, fake: bool = True) -> MemoryEstimate:
    """Peak bytes of training `model` (a diffusers folder, or a function that builds the parts
    from configs) with `settings` at `resolution` px: one step in the text-encoder phase when
    there is one, then one after it, with class images when `prior`. With --shard, what one GPU
    of the --gpus holds (`model` then a folder, or a function a spawned process can import).

    --shard's figure is measured, not derived from one GPU's: the step runs with FSDP2 as a real
    run shards it (sharding.py), as rank 0 of --gpus processes in a fake process group
    (fake_process_group.py). So what FSDP2 itself allocates counts as the rest of a step does: the
    padded shards (rank 0's are as large as any), each block's weights gathered whole (in the
    trained weights' fp32) while it computes, the reduce-scatter buffers of its gradients, the
    text encoders' DDP buckets when they train; and a change to how sharding.py shards is seen
    with no formula to keep in step. The loading phase is counted too: the Trainer shards the
    denoiser as it moves it to the GPU, one block at a time (ShardingPeak)."""
    if settings.shard and settings.gpus > 1:
        start = time.perf_counter()
        estimate = run_as_rank_0_of(settings.gpus, measure_training_memory, model, settings, resolution,
                                    runtime, prior, fake, rank=0, world=settings.gpus)
        return dataclasses.replace(estimate, seconds=time.perf_counter() - start)
    return measure_training_memory(model, settings, resolution, runtime, prior, fake)


def measure_training_memory(model: str | Path | Callable[[], ModelParts], settings: TrainingSettings,
                            resolution: int, runtime: RuntimeSettings = RuntimeSettings(),
                            prior: bool = False, fake: bool = True, rank: int = 0,
                            world: int = 1) -> MemoryEstimate:
    """estimate_training_memory measured in this process, as process `rank` of `world` (above 1:
    in the default process group, which --shard shards the denoiser over)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    start = time.perf_counter()
    tracker = LiveTensorBytes()
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    runtime = runtime.model_copy(update={"compile": False})
    sharding = ShardingPeak(tracker)
    with mode, tracker, _fake_friendly(fake), _cpu_kernel_notices_hidden(), sharding:
        parts = model() if callable(model) else build_parts(model)
        parts.family.check_settings(settings)  # what the family cannot train: its reason, not an estimate
        keep = {id(m): kept_unquantised(m) for m in (parts.denoiser, *parts.text_encoders)}
        trainer = trainer_module.Trainer(parts, _examples(resolution, "shrk"), settings, total_steps=2,
                                         runtime=runtime, rank=rank, world=world,
                                         class_examples=_examples(resolution, "") if prior else ())
        # fp16 loss scaling reads values; it holds ~no memory
        trainer.scaler = torch.amp.GradScaler(enabled=False)
        # Parts are built in fp32 and cast by the Trainer, which a real run does on the CPU before
        # moving them to the GPU: the GPU holds what the Trainer holds from here.
        # The Trainer encodes every prompt as it is built when no step needs the encoders: dropped here
        # and encoded again below, measured as their own phase.
        trainer._frozen_embeddings.clear()
        tracker.reset_peak()
        steps = [0, settings.text_encoder_phase] if trainer.text_encoder_trains_at(0) else [0]
        offload = Offload(trainer, tracker, steps) if runtime.offload else None
        base = HeldWeights(trainer, keep, settings.base_precision, tracker)
        phases, between, embeddings = {}, 0, 0
        if sharding.peak is not None:
            phases["loading"] = base.held(sharding.peak, not trainer.encoders_on_device)
        for step in steps:
            off = encoders_leave_gpu(trainer, step)
            if off:
                before = tracker.current
                tracker.reset_peak()
                _encode_every_prompt(trainer, step)
                embeddings = tracker.current - before
                phases["encoding"] = base.encoding_peak(tracker.peak, denoiser_there=step > 0)
            tracker.reset_peak()
            trainer.step(step)
            name = "text encoder" if trainer.text_encoder_trains_at(step) else "denoiser"
            in_flight = offload.in_flight if offload else 0
            phases[name] = base.step_peak(tracker.peak, off) + in_flight
            between = base.held(tracker.current, off) + in_flight
        saved = _checkpoint_bytes(trainer)
    return MemoryEstimate(
        peak_bytes=max(phases.values()), between_steps=between, seconds=time.perf_counter() - start,
        checkpoint_bytes=saved, model_bytes=_module_bytes(parts) - base.held_bytes,
        quantised_bytes=base.quantised_bytes, largest_layer_bytes=base.largest_fp32,
        offloaded_bytes=offload.host_bytes if offload else 0, embedding_bytes=embeddings,
        encoder_bytes=base.encoder_bytes - base.saved_encoders, phase_peaks=phases)


def encoders_leave_gpu(trainer, step: int) -> bool:
    """Whether the text encoders are off the GPU for the denoiser's step `step`: when nothing of
    the text side trains then and the embeddings are cached (as the Trainer's _condition caches)."""
    return (trainer.runtime.cache_text_embeddings and not trainer.trainables.new_vectors
            and not trainer.text_encoder_trains_at(step))


def _encode_every_prompt(trainer, step: int) -> None:
    captions = [e.caption for e in (*trainer.examples, *trainer.class_examples)]
    with trainer._autocast():  # as the step encodes
        trainer._condition(captions, step)


class ShardingPeak:
    """--shard: the most the GPU holds while the denoiser is sharded (None without --shard). The
    Trainer shards it from host memory, and fully_shard moves one block at a time to the GPU and
    keeps its shard: the shards, and the largest block whole. Here, where parts are built on the
    device they are measured on, that is counted rather than measured: what is held once sharded
    (everything built so far, an upper bound) and the largest block."""

    def __init__(self, tracker: LiveTensorBytes):
        self.tracker, self.peak = tracker, None

    def __enter__(self):
        shard = self._shard = trainer_module.shard_denoiser

        def measured(denoiser, *args, **kwargs):
            shard(denoiser, *args, **kwargs)
            self.peak = self.tracker.current + largest_block_bytes(denoiser)

        trainer_module.shard_denoiser = measured
        return self

    def __exit__(self, *exc):
        trainer_module.shard_denoiser = self._shard


def largest_block_bytes(denoiser: torch.nn.Module) -> int:
    """The bytes of the largest block of a sharded denoiser, whole (a DTensor's numel is its whole
    tensor's)."""
    blocks = [block for child in denoiser.children() if isinstance(child, torch.nn.ModuleList)
              for block in child]
    return max((sum(p.numel() * p.element_size() for p in block.parameters()) for block in blocks), default=0)


class HeldWeights:
    """What the GPU holds of the model in each phase: the frozen layers --base-precision quantises
    at their quantised bytes (quantised_bytes.py), and the text encoders only while they are there."""

    def __init__(self, trainer, keep: dict[int, Callable[[str], bool]], precision: str,
                 tracker: LiveTensorBytes):
        quantises = precision in QUANTISED or (precision in HALF
                                               and frozen_dtype(trainer.precision) == torch.float32)
        trained = list(trainer.trainables.named().values())
        parts = trainer.parts

        def layers(module):
            found = quantised_layers(module, keep[id(module)], trained, precision) if quantises else []
            return [q for q in found if tracker.counts(q.weight)]  # --offload: a block's are on the host

        denoiser = layers(parts.denoiser)
        encoders = [q for m in parts.text_encoders for q in layers(m)]
        self.saved_denoiser = sum(q.held_bytes - q.quantised_bytes for q in denoiser)
        self.saved_encoders = sum(q.held_bytes - q.quantised_bytes for q in encoders)
        self.held_bytes = sum(q.held_bytes for q in denoiser + encoders)
        self.quantised_bytes = sum(q.quantised_bytes for q in denoiser + encoders)
        compute = frozen_dtype(trainer.precision).itemsize
        copies = {"denoiser": [0] + [q.weight.numel() * compute for q in denoiser],
                  "encoders": [0] + [q.weight.numel() * compute for q in encoders]}
        self.dequantised = {k: max(v) if precision in QUANTISED else 0 for k, v in copies.items()}
        self.largest_fp32 = max([q.weight.numel() * 4 for q in denoiser + encoders], default=0)
        self.denoiser_bytes = _counted_bytes([parts.denoiser], tracker)
        self.encoder_bytes = _counted_bytes(parts.text_encoders, tracker)

    def held(self, measured: int, encoders_off: bool) -> int:
        encoders = self.encoder_bytes - self.saved_encoders if encoders_off else 0
        return measured - self.saved_denoiser - self.saved_encoders - encoders

    def step_peak(self, measured: int, encoders_off: bool) -> int:
        dequantised = self.dequantised["denoiser"] if encoders_off else max(self.dequantised.values())
        return self.held(measured, encoders_off) + dequantised

    def encoding_peak(self, measured: int, denoiser_there: bool) -> int:
        """Encoding every prompt: with the denoiser on the GPU only where it is there already (after a
        text encoder phase); at the start of a run the encoders encode before it moves there."""
        denoiser = 0 if denoiser_there else self.denoiser_bytes - self.saved_denoiser
        return self.held(measured, False) - denoiser + self.dequantised["encoders"]


# a ModuleList named so (or ending so) holds the blocks --offload swaps
SWAPPED_BLOCKS = ("blocks", "resnets")
IN_FLIGHT = 2


def swapped_blocks(denoiser: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks --offload keeps on the host: the elements of the denoiser's ModuleLists named
    *blocks or resnets that hold no such list themselves (FLUX: its double and single stream
    blocks; a UNet: its transformer blocks and ResNet blocks, not its down/up stages)."""
    def lists(module):
        return [m for n, m in module.named_modules() if isinstance(m, torch.nn.ModuleList)
                and n.rsplit(".", 1)[-1].endswith(SWAPPED_BLOCKS)]

    return [block for found in lists(denoiser) for block in found if len(lists(block)) == 0]


class Offload:
    """--offload in the estimate: the swapped blocks' weights, gradients and optimizer state count
    as host memory. The steps run once first so that the optimizer state exists and is moved there
    too (the state a real run keeps on the host is never allocated on the GPU)."""

    def __init__(self, trainer, tracker: LiveTensorBytes, steps: list[int]):
        self.blocks = swapped_blocks(trainer.parts.denoiser)
        params = [p for b in self.blocks for p in b.parameters()]

        def grad_to_host(p: torch.Tensor) -> None:
            if p.grad is not None:
                tracker.forget(p.grad)

        for p in params:
            tracker.forget(p)
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(grad_to_host)
        for step in steps:
            trainer.step(step)
        trainer.optimizer.zero_grad(set_to_none=True)
        # the measured steps encode the prompts and the photos again, as a run's first steps do
        trainer._frozen_embeddings.clear()
        trainer.latents = LatentCache(trainer.parts.vae, trainer.runtime.cache_latents)
        self._state = {id(p): [v for v in trainer.optimizer.state.get(p, {}).values()
                               if isinstance(v, torch.Tensor)]
                       for p in params}
        for tensors in self._state.values():
            for t in tensors:
                tracker.forget(t)
        held = [self._block_bytes(b) for b in self.blocks]  # (weights, gradients, optimizer state) each
        self.in_flight = sum(sorted(map(sum, held))[-IN_FLIGHT:])
        # on the host: every block's weights and state, and its gradients unless the step in backward
        # frees each as soon as its weight is updated
        self.weights, self.gradients, self.state = (sum(column) for column in zip(*held))
        self.gradients *= not trainer.settings.step_in_backward
        self.host_bytes = self.weights + self.gradients + self.state

    def _block_bytes(self, block: torch.nn.Module) -> tuple[int, int, int]:
        params = list(block.parameters())
        grads = [p for p in params if p.requires_grad]
        return _bytes(params), _bytes(grads), sum(_bytes(self._state[id(p)]) for p in params)


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _counted_bytes(modules, tracker: LiveTensorBytes) -> int:
    """The bytes of the modules' weights and buffers the tracker counts (on the GPU; of a sharded
    weight, this process's shard)."""
    held = [local(t) for m in modules for t in (*m.parameters(), *m.buffers())]
    return _bytes([t for t in held if tracker.counts(t)])


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
        return {"state1": torch.zeros_like(p, dtype=torch.uint8),
                "state2": torch.zeros_like(p, dtype=torch.uint8),
                "absmax1": torch.zeros(blocks, **zeros), "absmax2": torch.zeros(blocks, **zeros),
                "qmap1": torch.zeros(256, **zeros), "qmap2": torch.zeros(256, **zeros)}


class BucketedGradients(torch.nn.Module):
    """Holds what DDP (data_parallel.py) holds, for estimating memory only: its gradient buckets,
    allocated as it is wrapped, with every gradient a view into them (gradient_as_bucket_view)."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        super().__init__()
        self.module = module
        trained = [p for p in module.parameters() if p.requires_grad]
        self.buckets = {dtype: torch.zeros(sum(p.numel() for p in trained if p.dtype == dtype), dtype=dtype,
                                           device=device) for dtype in {p.dtype for p in trained}}
        offsets = dict.fromkeys(self.buckets, 0)
        for p in trained:
            view = self.buckets[p.dtype][offsets[p.dtype]:offsets[p.dtype] + p.numel()].view_as(p)
            offsets[p.dtype] += p.numel()
            p.register_post_accumulate_grad_hook(lambda p, view=view: self._into_bucket(p, view))

    @staticmethod
    def _into_bucket(p: torch.Tensor, view: torch.Tensor) -> None:
        if p.grad is not view:
            view.copy_(p.grad)
            p.grad = view

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def no_sync(self):
        return contextlib.nullcontext()


def _examples(resolution: int, word: str) -> list:
    caption = f"a photo of {word} person" if word else "a photo of a person"
    return [trainer_module.Example(torch.zeros(1, 3, resolution, resolution), caption, "shrk")
            for _ in range(2)]


@contextlib.contextmanager
def _cpu_kernel_notices_hidden():
    """The steps run the CPU's kernels in place of the GPU's: torch's notice that a CPU kernel has no
    fused path for a half input beside an fp32 norm weight says nothing about the run estimated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
        yield


@contextlib.contextmanager
def _fake_friendly(fake: bool):
    """8-bit AdamW as its stand-in, DDP too (BucketedGradients; its reducer reads the weights' data);
    and three things fake tensors cannot do, done otherwise:
    - which example a step trains on is read from a random draw's values: the draw runs on
      real tensors;
    - a noise scheduler reads values of the tables it builds (a flow-matching one, its smallest
      sigma): schedulers are built on real tensors (a few kB, never on the GPU), and so is
      --shard's device mesh (it reads its table of ranks);
    - a module of fake parameters cannot be moved with `.to()` (torch swaps the tensors, and
      the fake mode holds weak references to them): a move to the device and dtype the module
      has already (peft's, for new LoRA weights) returns the module as it is."""
    eight_bit = trainer_module._adamw_8bit
    trainer_module._adamw_8bit = lambda groups, settings, device: EightBitAdamWState(
        groups, settings.base_learning_rate)
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

    import torch.distributed.device_mesh as device_mesh

    draw, move = trainer_module.draw_micro_batch, torch.nn.Module.to
    share_gradients = trainer_module.share_gradients
    scheduler = SchedulerMixin.__dict__["from_pretrained"]
    mesh = device_mesh.init_device_mesh

    def real_draw(*args, **kwargs):
        with unset_fake_temporarily():
            return draw(*args, **kwargs)

    def real_scheduler(cls, *args, **kwargs):
        with unset_fake_temporarily():
            return scheduler.__func__(cls, *args, **kwargs)

    def real_mesh(*args, **kwargs):
        with unset_fake_temporarily():
            return mesh(*args, **kwargs)

    def move_unless_there(module, *args, **kwargs):
        device, dtype, _, memory_format = torch._C._nn._parse_to(*args, **kwargs)
        here = all((device is None or p.device == torch.device(device))
                   and (dtype is None or p.dtype == dtype)
                   for p in module.parameters())
        return module if here and memory_format is None else move(module, *args, **kwargs)

    trainer_module.draw_micro_batch, torch.nn.Module.to = real_draw, move_unless_there
    trainer_module.share_gradients = BucketedGradients
    SchedulerMixin.from_pretrained = classmethod(real_scheduler)
    device_mesh.init_device_mesh = real_mesh  # sharding.py imports it as it shards
    try:
        yield
    finally:
        trainer_module.draw_micro_batch, torch.nn.Module.to = draw, move
        trainer_module.share_gradients = share_gradients
        SchedulerMixin.from_pretrained = scheduler
        device_mesh.init_device_mesh = mesh
