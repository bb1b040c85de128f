"""One training step of any method, and the state that makes it resumable."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import safetensors.torch
import torch

from dreambooth_core.config import RuntimeSettings, TrainingSettings, optimizer_device_problem
from dreambooth_core.errors import ConfigError, SessionError
from dreambooth_core.families import load_model_parts
from dreambooth_core.families.family import Condition, ImageGeometry, ModelParts
from dreambooth_core.families.objectives import NoisyBatch, per_example_loss, randn
from dreambooth_core.session.checkpoints import Checkpoint, Writer, read_tensor_file
from dreambooth_core.session.tensor_files import write_safetensors
from dreambooth_core.training.memory.activation_checkpointing import checkpoint_activations
from dreambooth_core.training.data.batches import Draw, draw_micro_batch
from dreambooth_core.training.distributed.data_parallel import gradients_kept_local, share_gradients
from dreambooth_core.training.distributed.sharding import clip_gradients, local, shard_denoiser
from dreambooth_core.training.devices import resolve_precision
from dreambooth_core.training.memory.frozen_weights import HALF, frozen_dtype, hold_frozen
from dreambooth_core.training.methods import Trainables, set_up_method, text_encoders_stay_on_device
from dreambooth_core.training.memory.offload import BlockOffload, check_trainer_offload
from dreambooth_core.training.memory.step_in_backward import StepInBackward, refuse_fp16
from dreambooth_core.training.data.text_embeddings import EmbeddingStore, weights_digest

WEIGHTS_FILE = "weights.safetensors"
EMA_FILE = "ema.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
AUTOCAST = HALF  # the dtype autocast computes in, per --mixed-precision
HOST = torch.device("cpu")  # where text encoders wait while no step needs them


@dataclass(frozen=True)
class Example:
    pixels: torch.Tensor  # [1, 3, H, W] in [-1, 1]
    caption: str
    subject: str = ""
    # SDXL's micro-conditioning: the photo's upright (height, width) and the square crop taken from
    # it (left, top, right, bottom); None: the image as it is, uncropped.
    original_size: tuple[int, int] | None = None
    crop_box: tuple[int, int, int, int] | None = None
    mask: torch.Tensor | None = None  # [1, 1, H, W] in [0, 1], 1 on the subject (--masked-loss)


class Trainer:
    """Trains what the method names (see methods.py) on instance and class examples.

    `settings` decide the result; `runtime` only how fast and in how much memory it is reached."""

    def __init__(self, parts: ModelParts, examples: list[Example], settings: TrainingSettings,
                 total_steps: int, runtime: RuntimeSettings = RuntimeSettings(),
                 class_examples: list[Example] = (), initializer_word: str = "person",
                 rank: int = 0, world: int = 1, device: torch.device | None = None,
                 embedding_store: EmbeddingStore | None = None):
        """`device`: where to train, when the parts are loaded elsewhere (on the CPU: then the
        frozen model reaches the GPU already in the precision it is held in). `embedding_store`:
        where the frozen text conditioning is kept between runs (None: in memory only)."""
        self.parts, self.examples, self.settings, self.runtime = parts, examples, settings, runtime
        self.total_steps, self.rank, self.world = total_steps, rank, world
        self.sharded = settings.shard and world > 1  # the denoiser spread over the processes (FSDP2)
        self.class_examples = list(class_examples)
        self.device = device or next(parts.denoiser.parameters()).device
        self.precision = resolve_precision(settings.mixed_precision, self.device)
        self.family = parts.family
        self.objective = self.family.objective(parts, settings)
        if settings.step_in_backward:
            refuse_fp16(self.precision)
        check_trainer_offload(settings, runtime)
        subjects = sorted({e.subject for e in examples})
        self.trainables = set_up_method(parts, settings, subjects, initializer_word)
        hold_frozen([parts.denoiser, *parts.text_encoders], self.trainables.named().values(),
                    frozen_dtype(self.precision, settings.base_precision))
        if runtime.channels_last:
            parts.denoiser.to(memory_format=torch.channels_last)
        # --offload: the denoiser's blocks stay on the host (never all on the device at once).
        self.offload = BlockOffload(parts.denoiser, self.device) if runtime.offload else None
        self.embedding_store, self._frozen_embeddings = embedding_store, {}
        self.encoders_on_device = True
        if not text_encoders_stay_on_device(settings, self.family, runtime):
            # No step needs the encoders: every caption is encoded now, before the denoiser takes
            # the device, and the encoders wait in host memory (text_embeddings.py).
            self._freeze_conditioning()
        if runtime.gradient_checkpointing:
            checkpoint_activations(parts, settings.trains_text_encoder)
        if self.sharded:  # before the move: fully_shard takes each block to the GPU and keeps its shard
            shard_denoiser(parts.denoiser, self.trainables, self.device)
        parts.to(self.device, text_encoders=self.encoders_on_device)
        self.optimizer = make_optimizer(self.trainables, settings, self.device)
        if self.offload is not None:
            self.offload.attach(self.optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.ema = {n: p.detach().clone().float() for n, p in self.trainables.denoiser.items()} \
            if settings.ema_decay > 0 else None
        self.groups = [[i for i, e in enumerate(examples) if e.subject == s] for s in subjects]
        self.class_groups = [[i for i, e in enumerate(self.class_examples) if e.subject == s]
                             for s in subjects] if self.class_examples else []
        self.buckets, self.class_buckets = bucket_indices(examples, self.class_examples)
        self.latents = LatentCache(parts.vae, runtime.cache_latents)
        # What trained forward passes go through: the modules, or with several processes their
        # DDP wrappers, which average the gradients during backward (data_parallel.py).
        self.denoiser, self.encoders = parts.denoiser, list(parts.text_encoders)
        self.shared: list[torch.nn.Module] = []
        if world > 1:
            self._share_gradients()
        self.denoiser = torch.compile(self.denoiser) if runtime.compile else self.denoiser

    def _share_gradients(self) -> None:
        """Textual inversion trains no UNet weight (its embeddings sit in the text encoder); the
        text encoder's wrapper serves only its training phase, after which it is called plain."""
        if self.sharded:  # FSDP2 averages the denoiser's gradients itself
            self.shared.append(self.parts.denoiser)
        elif self.trainables.denoiser:
            self.denoiser = share_gradients(self.parts.denoiser, self.device)
            self.shared.append(self.denoiser)
        trained = [(self.trainables.text_encoder, self.trainables.embeddings),
                   (self.trainables.text_encoder_2, self.trainables.embeddings_2)]
        for index, (weights, vectors) in enumerate(trained[:len(self.encoders)]):
            if weights or vectors is not None:
                for parameter in weights.values():
                    # DDP takes the ones that need a gradient now; see _enter_phase
                    parameter.requires_grad_(True)
                self.encoders[index] = share_gradients(self.parts.text_encoders[index], self.device)
                self.shared.append(self.encoders[index])

    # -- one step -------------------------------------------------------------

    def step(self, step: int) -> torch.Tensor:
        """One optimizer step; returns the loss without a host-device sync."""
        self._enter_phase(step)
        self._set_learning_rates(step)
        total = torch.zeros((), device=self.device)
        micro_batches = self.settings.gradient_accumulation
        for micro in range(micro_batches):
            # Several processes: the last micro-batch's backward averages the sum over all of them.
            with gradients_kept_local(self.shared, local=micro < micro_batches - 1):
                loss = self.loss(step, micro) / micro_batches
                self.scaler.scale(loss).backward()
            total += loss.detach()
        if self.offload is not None:
            self.offload.finish()
        if not self.settings.step_in_backward:  # else each weight was updated during backward
            self._optimizer_step()
        self._update_ema(step)
        return total

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        trained = [p for p in self.trainables.named().values() if p.grad is not None]
        if self.sharded:
            clip_gradients(trained, self.settings.max_grad_norm)
        else:
            torch.nn.utils.clip_grad_norm_(trained, self.settings.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def loss(self, step: int, micro: int = 0) -> torch.Tensor:
        o = self.settings
        draw = draw_micro_batch(o.seed, step, micro, o.batch_size, o.gradient_accumulation,
                                self.groups, self.class_groups, o.flip, self.rank, self.world,
                                self.buckets, self.class_buckets)
        chosen = [("i", i, self.examples[i]) for i in draw.instances]
        chosen += [("c", i, self.class_examples[i]) for i in draw.classes]
        posteriors = [self.latents.posterior((kind, i), e.pixels, flip)
                      for (kind, i, e), flip in zip(chosen, draw.flips)]
        mean, std = (draw.spread(torch.cat(t)) for t in zip(*posteriors))
        g = draw.generator  # several processes: drawn over the whole batch, this process's rows kept
        latents = self.objective.latents(mean, std, g, self.device)
        noise = randn(latents.shape, g, self.device)
        if o.offset_noise:
            noise = noise + o.offset_noise * randn((*latents.shape[:2], 1, 1), g, self.device)
        batch = own_rows(self.objective.noisy_batch(latents, noise, g, self.device), draw)
        images = [geometry(e, flip) for (_, _, e), flip in zip(chosen, draw.flips)]
        with self._autocast():
            condition = self._condition([e.caption for _, _, e in chosen], step)
            prediction = self.family.predict(self.denoiser, batch, condition, images)
        weights = mask_weights([e for _, _, e in chosen], draw.flips, prediction.shape[-2:], o.mask_floor) \
            if o.masked_loss else None
        return dreambooth_loss(per_example_loss(prediction, batch, weights), len(draw.instances),
                               o.prior_loss_weight)

    # -- phases, learning rates, EMA ------------------------------------------

    def text_encoder_trains_at(self, step: int) -> bool:
        return bool(self.trainables.text_side) and step < self.settings.text_encoder_phase

    def _enter_phase(self, step: int) -> None:
        active = self.text_encoder_trains_at(step)
        for parameter in self.trainables.text_side.values():
            parameter.requires_grad_(active)
        if active:
            self._frozen_embeddings.clear()

    def _set_learning_rates(self, step: int) -> None:
        o = self.settings
        factor = lr_factor(step, o.lr_schedule, o.warmup_steps, self.total_steps)
        for group in self.optimizer.param_groups:
            base = o.text_encoder_learning_rate if group["name"] == "text_encoder" else o.base_learning_rate
            group["lr"] = base * factor

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        if self.ema is None:
            return
        decay = min(self.settings.ema_decay, (1 + step) / (10 + step))
        for name, parameter in self.trainables.denoiser.items():
            self.ema[name].mul_(decay).add_(parameter.detach().float(), alpha=1 - decay)

    # -- text conditioning ----------------------------------------------------

    def _condition(self, captions: list[str], step: int) -> Condition:
        """Embeddings with gradients while the text side trains; encoded once when it is frozen
        (the first step after the text-encoder phase frees the encoders from the device)."""
        if self.trainables.new_vectors or self.text_encoder_trains_at(step):
            return self._encode(captions, self.encoders)
        if not self.runtime.cache_text_embeddings:
            with torch.no_grad():
                return Condition.cat([self._encode([c], self.parts.text_encoders) for c in captions])
        if not self._frozen_embeddings:
            self._drop_text_encoder_wrappers()
            self._freeze_conditioning()
        return Condition.cat([self._frozen_embeddings[c] for c in captions])

    @torch.no_grad()
    def _freeze_conditioning(self) -> None:
        """Every caption's conditioning by the frozen encoders, each caption alone (as a step would
        encode it): read from the session's store, or encoded there on the device; then the
        encoders leave the device. A one-time host sync when it runs inside a step."""
        captions = list(dict.fromkeys(e.caption for e in [*self.examples, *self.class_examples]))
        store, found, files = self.embedding_store, {}, {}
        if store is not None:
            encoders = weights_digest(self.trainables.text_side)
            files = {c: store.file(c, encoders, self.device) for c in captions}
            found = {c: value for c in captions if (value := store.load(files[c], self.device)) is not None}
        missing = [c for c in captions if c not in found]
        if missing:
            self._move_text_encoders(self.device)
            with self._autocast():
                for caption in missing:
                    found[caption] = self._encode([caption], self.parts.text_encoders)
                    if store is not None:
                        store.save(files[caption], found[caption])
        self._frozen_embeddings = {c: found[c] for c in captions}
        self._move_text_encoders(HOST)

    def _drop_text_encoder_wrappers(self) -> None:
        """Several processes: the encoders' DDP wrappers served the phase; the encoders leave."""
        wrappers = [e for e, plain in zip(self.encoders, self.parts.text_encoders) if e is not plain]
        self.shared = [m for m in self.shared if all(m is not w for w in wrappers)]
        self.encoders = list(self.parts.text_encoders)

    def _move_text_encoders(self, device: torch.device) -> None:
        for encoder in self.parts.text_encoders:
            if next(encoder.parameters()).device != device:
                encoder.to(device)
        self.encoders_on_device = device == self.device

    @contextlib.contextmanager
    def text_encoders_for_rendering(self):
        """The text encoders on the device while samples or evaluations render with the parts, and
        back in host memory after (a copy each way: FLUX.1's T5-XXL is 9.5 GB in bf16, and the
        device holds it beside the training state while it renders)."""
        away = not self.encoders_on_device
        if away:
            self._move_text_encoders(self.device)
        try:
            yield
        finally:
            if away:
                self._move_text_encoders(HOST)

    def _encode(self, captions: list[str], encoders: list[torch.nn.Module]) -> Condition:
        return self.family.encode(self.parts, captions, encoders, self.device)

    def _autocast(self):
        dtype = AUTOCAST.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        # Offload, and --shard's blocks gathered whole one at a time: no cache of cast weights, which
        # would hold every block's until the forward ends.
        return torch.autocast(self.device.type, dtype=dtype,
                              cache_enabled=not (self.runtime.offload or self.sharded))

    # -- checkpoint state -----------------------------------------------------

    def state_writers(self, copy: bool = True) -> dict[str, Writer]:
        """Writers of the state. With `copy`, over a host copy taken now: training may go on while
        they write. Without, over the live tensors (copied to the host one at a time while
        writing): no host copy, but training must wait until they are done."""
        snapshot = _cpu if copy else dict
        weights = snapshot(self.trainables.named())
        optimizer = {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}
        optimizer = _cpu_copy(optimizer) if copy else optimizer
        writers = {WEIGHTS_FILE: lambda f: write_safetensors(f, weights),
                   OPTIMIZER_FILE: lambda f: torch.save(optimizer, f)}
        if self.ema is not None:
            ema = snapshot(self.ema)
            writers[EMA_FILE] = lambda f: write_safetensors(f, ema)
        return writers

    def state_bytes(self) -> int:
        """The size of the state a checkpoint holds (what a host copy of it takes)."""
        optimizer = [v for state in self.optimizer.state.values() for v in state.values()
                     if torch.is_tensor(v)]
        tensors = [*self.trainables.named().values(), *optimizer, *(self.ema or {}).values()]
        return sum(local(t).numel() * t.element_size() for t in tensors)

    def sharded_state(self) -> dict:
        """--shard: the state as torch.distributed.checkpoint saves and loads it (sharded_checkpoint.py):
        the weights, EMA's and AdamW's moments as this process's shards, under the weights' names."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return {"weights": self.trainables.named(), "ema": self.ema or {},
                "optimizer": get_optimizer_state_dict(self._trained_modules(), self.optimizer)}

    @torch.no_grad()
    def load_sharded_state(self, state: dict) -> None:
        """The optimizer's part of a loaded sharded_state() (the weights and EMA were loaded in place)."""
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(self._trained_modules(), self.optimizer, state["optimizer"])

    def _trained_modules(self) -> torch.nn.Module:
        """The modules whose weights train, under the names the weights have in trainables.named()."""
        trained = {self.trainables.denoiser_name: self.parts.denoiser}
        for name, encoder, weights in zip(("text_encoder", "text_encoder_2"), self.parts.text_encoders,
                                          (self.trainables.text_encoder, self.trainables.text_encoder_2)):
            if weights:
                trained[name] = encoder
        return torch.nn.ModuleDict(trained)

    @torch.no_grad()
    def load_state(self, checkpoint: Checkpoint) -> None:
        weights = safetensors.torch.load(checkpoint.files[WEIGHTS_FILE])
        named = self.trainables.named()
        if weights.keys() != named.keys():
            raise SessionError(f"checkpoint at step {checkpoint.step} holds other weights than "
                               f"--method {self.settings.method} trains; start a new --session.")
        for name, parameter in named.items():
            parameter.copy_(weights[name])
        state = read_tensor_file(checkpoint.files[OPTIMIZER_FILE])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            for name, value in safetensors.torch.load(checkpoint.files[EMA_FILE]).items():
                self.ema[name].copy_(value)


def make_optimizer(trainables: Trainables, settings: TrainingSettings, device: torch.device):
    main = list(trainables.denoiser.values()) + trainables.new_vectors
    groups = [{"name": "main", "params": main, "weight_decay": 0.0 if trainables.new_vectors else 1e-2}]
    if trainables.text_side:
        groups.append({"name": "text_encoder", "params": list(trainables.text_side.values()),
                       "weight_decay": 1e-2})
    if settings.optimizer == "adamw-8bit":
        def make(g): return _adamw_8bit(g, settings, device)
    else:
        def make(g): return torch.optim.AdamW(g, lr=settings.base_learning_rate, fused=device.type == "cuda")
    return StepInBackward(groups, make, settings.max_grad_norm) if settings.step_in_backward else make(groups)


def _adamw_8bit(groups: list[dict], settings: TrainingSettings, device: torch.device):
    if problem := optimizer_device_problem(settings.optimizer, device.type):
        raise ConfigError(f"{problem}.")
    try:
        import bitsandbytes
    except ImportError:
        raise ConfigError("--optimizer adamw-8bit needs the bitsandbytes package: "
                          "pip install bitsandbytes, or use --optimizer adamw.") from None
    return bitsandbytes.optim.AdamW8bit(groups, lr=settings.base_learning_rate)


def own_rows(batch: NoisyBatch, draw: Draw) -> NoisyBatch:
    if draw.rows is None:
        return batch
    return NoisyBatch(*(None if t is None else draw.mine(t)
                        for t in (batch.noisy, batch.timesteps, batch.target, batch.weights)))
def bucket_indices(examples: list[Example], class_examples: list[Example]
                   ) -> tuple[list[int] | None, list[int] | None]:
    """Each example's aspect-ratio bucket (an index into the instance images' sizes), or (None, None)
    when every instance image has one size. With several, every subject's class images must come in
    each size its photos do (generation/class_images.py renders them so)."""
    sizes = sorted({tuple(e.pixels.shape[-2:]) for e in examples})
    if len(sizes) <= 1:
        return None, None
    of = {size: index for index, size in enumerate(sizes)}
    classes = {(e.subject, tuple(e.pixels.shape[-2:])) for e in class_examples}
    missing = (sorted({(e.subject, tuple(e.pixels.shape[-2:])) for e in examples} - classes)
               if class_examples else [])
    if missing:
        subject, (height, width) = missing[0]
        raise SessionError(f"subject {subject!r} has photos in the {width}x{height} aspect-ratio bucket "
                           "but no class images of that size; the class images are from another "
                           "dataset. Run again to render them, or start a new --session.")
    return [of[tuple(e.pixels.shape[-2:])] for e in examples], \
        [of.get(tuple(e.pixels.shape[-2:]), -1) for e in class_examples]


def mask_weights(examples: list[Example], flips: list[bool], size: torch.Size,
                 floor: float) -> torch.Tensor | None:
    """[batch, 1, h, w]: floor + (1 - floor) x each example's mask, area-averaged to the prediction's
    latent size (h, w) and mirrored with its image; 1 everywhere for an example without one (class
    images). None when no example has a mask."""
    if all(e.mask is None for e in examples):
        return None
    rows = []
    for example, flip in zip(examples, flips):
        if example.mask is None:
            rows.append(torch.ones(1, 1, *size))
            continue
        mask = torch.nn.functional.interpolate(example.mask.float(), size=tuple(size), mode="area")
        rows.append(floor + (1 - floor) * (mask.flip(-1) if flip else mask))
    return torch.cat(rows)


def geometry(example: Example, flip: bool) -> ImageGeometry:
    height, width = example.pixels.shape[-2:]
    return ImageGeometry(height, width, example.original_size, example.crop_box, flip)


def _cpu(tensors: dict[str, torch.Tensor], copy: bool = True) -> dict[str, torch.Tensor]:
    """The tensors on the CPU; `copy=False`: tensors already there are the same tensors."""
    return {k: v.detach().to("cpu", copy=copy).contiguous() for k, v in tensors.items()}


def _cpu_copy(value):
    """A copy of a nested state dict with every tensor copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(v) for v in value)
    return value


def dreambooth_loss(per_example: torch.Tensor, instances: int, prior_weight: float) -> torch.Tensor:
    """The DreamBooth objective over a batch: the instance loss plus the weighted prior-preservation
    term. Instance examples come first, then their class examples. Each example's own loss is its
    family's objective (dreambooth_core/families/objectives.py)."""
    loss = per_example[:instances].mean()
    if per_example.shape[0] > instances:
        loss = loss + prior_weight * per_example[instances:].mean()
    return loss


def lr_factor(step: int, schedule: str, warmup: int, total: int) -> float:
    """Multiplier of the base learning rate for optimizer step `step` (0-based): a pure function of
    the step, so there is nothing to save for resume."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


class LatentCache:
    """VAE posteriors of training images, computed once per image and flip: (mean, std) of each
    image's latent distribution. Each image is encoded alone, so a cached value equals what
    encoding it at that step would give."""

    def __init__(self, vae: torch.nn.Module, enabled: bool = True):
        self.vae, self.enabled, self._stored = vae, enabled, {}
        self.device = next(vae.parameters()).device

    def posterior(self, key: tuple, pixels: torch.Tensor,
                  flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        key = (*key, flip)
        if key in self._stored:
            return self._stored[key]
        value = self._encode(pixels.flip(-1) if flip else pixels)
        if self.enabled:
            self._stored[key] = value
        return value

    @torch.no_grad()
    def _encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.vae.encode(pixels.to(self.device, torch.float32)).latent_dist
        return dist.mean, dist.std


Weights = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]  # trained, and EMA's or None


def checkpoint_weights(checkpoint: Checkpoint, use_ema: bool = True) -> Weights:
    """The trained weights a checkpoint holds (and EMA's, when on and saved)."""
    averaged = use_ema and EMA_FILE in checkpoint.files
    return (safetensors.torch.load(checkpoint.files[WEIGHTS_FILE]),
            safetensors.torch.load(checkpoint.files[EMA_FILE]) if averaged else None)


def trainer_weights(trainer: Trainer) -> Weights:
    """What the trainer's checkpoint at this step holds (weights.safetensors, ema.safetensors),
    on the CPU: the same values, without reading them back."""
    averaged = _cpu(trainer.ema, copy=False) if trainer.ema is not None else None
    return _cpu(trainer.trainables.named(), copy=False), averaged


@torch.no_grad()
def parts_with(model_path: str, settings: TrainingSettings, subjects: list[str], weights: Weights,
               device: torch.device) -> tuple[ModelParts, Trainables]:
    """The base model with the method's trainables set to `weights` (EMA's, when given, for the
    denoiser)."""
    parts = load_model_parts(model_path, device)
    trainables = set_up_method(parts, settings, subjects)  # the initial values are overwritten
    values, averaged = weights
    if averaged is not None:
        values = values | {f"{trainables.denoiser_name}.{name}": value for name, value in averaged.items()}
    for name, parameter in trainables.named().items():
        parameter.copy_(values[name])
    parts.denoiser.requires_grad_(False).eval()
    for encoder in parts.text_encoders:
        encoder.requires_grad_(False).eval()
    return parts, trainables
