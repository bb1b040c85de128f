"""--offload: the trained denoiser's blocks live in host memory and visit the GPU one at a time.

A full fine-tune holds the fp32 masters and the optimizer state of every weight (FLUX.1's
transformer: 48 GB of masters alone). Here the weights of each block (the innermost modules
diffusers lists in the model's `_no_split_modules`: a UNet's resnets and transformer blocks, a
FLUX transformer's double and single blocks) and, between steps, their optimizer state live in
pinned host memory. The forward pass copies a block in just before it runs (the next one is
prefetched on a copy stream while the current one computes) and drops the copy after; the
backward pass copies it in again with its optimizer state, when the gradient reaches the
block's outputs, and the optimizer step in backward (step_in_backward.py) updates each weight
on the GPU the moment its gradient exists; once the block's last weight is stepped, weights
and state are copied back to the host and the GPU memory is freed. Everything outside the
blocks (embeddings, norms, in/out projections: a few percent) stays on the GPU.

The arithmetic is the same as without offload: every update runs on the GPU, on the same
values (copies are exact), in the same order, so --offload is a runtime setting that changes
memory and speed, never the trained weights. That is why it needs --step-in-backward: the usual
step needs every gradient at once, the whole model's, on the GPU (or on the host, where torch's
AdamW computes differently). Autocast's weight cache is turned off with offload (trainer.py): it
would keep a half-precision copy of every block until the forward ends; casting again gives the
same values. With gradient checkpointing a block's forward runs again inside the backward pass:
the block is in by then, and the hooks leave it there. Without it, autograd keeps what the block's
operations saved (under autocast the half-precision weights) until the backward pass; a weight
saved as it is (fp32) is the Parameter itself, which points at the device copy again by the time
its backward runs.

Why not diffusers' group offloading (hooks/group_offloading.py), which this follows for the
forward: it is made for inference. It has no backward hooks (a block's weights are not brought
back for its backward pass), and with streams it drops the GPU copy for the pinned host copy
taken when it was set up, so an update made on the GPU would be lost; gradients and optimizer
state have no place in it. kohya's block swap (sd-scripts, custom_offloading_utils.py) trains
through swapped blocks with gradient hooks and a fused optimizer step, as here, but keeps the
optimizer state on the GPU and swaps weight storage between blocks of one model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch.utils._pytree import tree_leaves

from dreambooth_core.config import RuntimeSettings, TrainingSettings, offload_needs
from dreambooth_core.errors import ConfigError
from dreambooth_core.training.memory.step_in_backward import StepInBackward


def check_trainer_offload(settings: TrainingSettings, runtime: RuntimeSettings) -> None:
    """The combinations the Trainer refuses on any device (the tests run it on the CPU, with the
    working copies there too); what the device lacks: devices.offload_problem."""
    if runtime.offload and (needs := offload_needs(settings, runtime)):
        raise ConfigError(f"--offload needs {'; and '.join(needs)}.")


def offload_units(denoiser: torch.nn.Module) -> list[torch.nn.Module]:
    """The innermost modules whose class the model lists in `_no_split_modules` (what accelerate's
    device maps never split), in the order of `modules()`."""
    kinds = set(getattr(denoiser, "_no_split_modules", None) or [])
    if not kinds:
        raise ConfigError(f"--offload does not know the blocks of {type(denoiser).__name__}: it lists no "
                          "_no_split_modules. Drop --offload.")
    named = [m for m in denoiser.modules() if type(m).__name__ in kinds]
    inner = [m for m in named if not any(o is not m and type(o).__name__ in kinds for o in m.modules())]
    return inner


def copy_stream(device: torch.device):
    """The stream host<->GPU copies run on, beside the computation; None on the CPU."""
    return torch.cuda.Stream(device) if device.type == "cuda" else None


def host_tensor(like: torch.Tensor, device: torch.device) -> torch.Tensor:
    """An empty host tensor shaped as `like`; page-locked when copies go to a GPU (without that,
    copies are not asynchronous)."""
    return torch.empty_like(like, device="cpu", pin_memory=device.type == "cuda")


@dataclass(eq=False)
class Unit:
    """One block: its weights, their host copies and, once stepped, their optimizer states'."""

    module: torch.nn.Module
    parameters: list[torch.nn.Parameter]
    homes: list[torch.Tensor]
    optimizers: list[torch.optim.Optimizer | None]
    state_homes: list[dict] = field(default_factory=list)
    weights_in: bool = False  # the weights' working copies are on the device
    state_in: bool = False
    in_backward: bool = False
    waiting: int = 0  # trained weights of this unit not yet stepped in this backward pass
    ready: object = None  # the copy stream's event after the copies in, until waited for


class BlockOffload:
    """Moves the units of `denoiser` between the host and `device` around their forward and
    backward passes. Made before the model moves to the device: the units' weights go to their
    host copies, the rest of the denoiser (and every buffer) to the device, so that the whole
    model is never on the device at once. Then `attach` the optimizer that steps each weight in
    backward: the hooks registered there run after its own."""

    def __init__(self, denoiser: torch.nn.Module, device: torch.device):
        self.device = device
        self.stream = copy_stream(device)
        self.units = [self._unit(m) for m in offload_units(denoiser)]
        self._move_the_rest(denoiser)
        self.order: list[Unit] = []  # units in the order the first forward pass ran them
        self.ordered = False  # the order is complete (its backward pass began): prefetching follows it
        self._hooks = []
        for unit in self.units:
            self._hooks.append(unit.module.register_forward_pre_hook(self._before_forward(unit)))
            self._hooks.append(unit.module.register_forward_hook(self._after_forward(unit)))

    def attach(self, optimizer: StepInBackward) -> None:
        by_weight = {id(o.param_groups[0]["params"][0]): o for o in optimizer.optimizers}
        for unit in self.units:
            unit.optimizers = [by_weight.get(id(p)) for p in unit.parameters]
            for parameter, one in zip(unit.parameters, unit.optimizers):
                if one is not None:
                    self._hooks.append(parameter.register_post_accumulate_grad_hook(self._stepped(unit)))

    def _move_the_rest(self, denoiser: torch.nn.Module) -> None:
        hosted = {id(p) for unit in self.units for p in unit.parameters}
        for module in denoiser.modules():
            for parameter in module.parameters(recurse=False):
                if id(parameter) not in hosted and parameter.device != self.device:
                    place(parameter, parameter.data.to(self.device))
            for name, buffer in module.named_buffers(recurse=False):
                module._buffers[name] = buffer.to(self.device)

    @property
    def host_bytes(self) -> int:
        """What the host copies hold: the blocks' weights, and their optimizer state once stepped."""
        states = [t for u in self.units for homes in u.state_homes for t in homes.values()]
        return sum(t.numel() * t.element_size() for t in [*states, *(h for u in self.units for h in u.homes)])

    def _unit(self, module: torch.nn.Module) -> Unit:
        parameters = list(module.parameters())
        homes = []
        for parameter in parameters:
            home = host_tensor(parameter.data, self.device)
            home.copy_(parameter.data)
            place(parameter, home)
            homes.append(home)
        return Unit(module, parameters, homes, [None] * len(parameters), [{} for _ in parameters])

    # -- hooks ------------------------------------------------------------------

    def _before_forward(self, unit: Unit):
        def hook(module, args):
            if unit.in_backward:  # recomputed by gradient checkpointing: already in
                return
            if not self.ordered and unit not in self.order:
                self.order.append(unit)
            self._bring_in(unit, state=False)
            self._wait(unit)
            following = self._neighbour(unit, +1)
            if following is not None:
                self._bring_in(following, state=False)  # prefetch while this one computes
        return hook

    def _after_forward(self, unit: Unit):
        def hook(module, args, output):
            if unit.in_backward:
                return
            if torch.is_grad_enabled():
                for tensor in tree_leaves(output):
                    if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
                        tensor.register_hook(self._backward_reaches(unit))
            self._send_out(unit, write_back=False)  # unchanged: the host copy is current
        return hook

    def _backward_reaches(self, unit: Unit):
        """Before any of the unit's backward runs: a gradient reaches one of its outputs first."""
        def hook(gradient):
            self.ordered = True
            if not unit.in_backward:
                unit.in_backward = True
                unit.waiting = sum(o is not None for o in unit.optimizers)
                self._bring_in(unit, state=True)
                self._wait(unit)
                previous = self._neighbour(unit, -1)
                if previous is not None and not previous.in_backward:
                    self._bring_in(previous, state=True)
        return hook

    def _stepped(self, unit: Unit):
        def hook(parameter):
            unit.waiting -= 1
            if unit.waiting == 0:
                self._send_out(unit, write_back=True)
        return hook

    def finish(self) -> None:
        """After the backward pass: units still in (a weight that got no gradient) go out, and the
        host waits for the copies, so that what it reads of the weights (a checkpoint) is current."""
        for unit in self.units:
            if unit.weights_in or unit.state_in:
                self._send_out(unit, write_back=unit.in_backward)
            unit.in_backward = False
        self.ordered = True
        if self.stream is not None:
            self.stream.synchronize()  # a host-device sync, once a step

    def remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()

    # -- moves ----------------------------------------------------------------

    def _neighbour(self, unit: Unit, offset: int) -> Unit | None:
        if not self.ordered or unit not in self.order:
            return None
        index = self.order.index(unit) + offset
        return self.order[index] if 0 <= index < len(self.order) else None

    def _bring_in(self, unit: Unit, state: bool) -> None:
        """Queue the copies in of the unit's weights (and optimizer state) on the copy stream."""
        if unit.weights_in and (unit.state_in or not state):
            return
        compute = torch.cuda.current_stream(self.device) if self.stream is not None else None
        with _on(self.stream):
            if not unit.weights_in:
                for parameter, home in zip(unit.parameters, unit.homes):
                    place(parameter, self._to_device(home, compute))
                unit.weights_in = True
            if state and not unit.state_in:
                for optimizer, homes in zip(unit.optimizers, unit.state_homes):
                    if optimizer is not None:
                        self._state_in(optimizer, homes, compute)
                unit.state_in = True
            if self.stream is not None:
                unit.ready = self.stream.record_event()

    def _to_device(self, home: torch.Tensor, compute) -> torch.Tensor:
        working = home.to(self.device, non_blocking=True, copy=True)
        if compute is not None:
            working.record_stream(compute)  # its memory is not reused while the computation reads it
        return working

    def _state_in(self, optimizer: torch.optim.Optimizer, homes: dict, compute) -> None:
        """The weight's optimizer state (none before its first step; on the host after a resume)."""
        state = optimizer.state[optimizer.param_groups[0]["params"][0]]
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                home = homes.get(key)
                if home is not value:  # loaded on the host by a resume: into page-locked memory
                    home = homes[key] = host_tensor(value, self.device)
                    home.copy_(value)
                state[key] = self._to_device(home, compute)

    def _wait(self, unit: Unit) -> None:
        if unit.ready is not None:
            torch.cuda.current_stream(self.device).wait_event(unit.ready)
            unit.ready = None

    def _send_out(self, unit: Unit, write_back: bool) -> None:
        """Back to the host copies; with `write_back` the working copies (updated) are copied there
        first, on the copy stream once the computation queued so far has written them."""
        if write_back and self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with _on(self.stream):
            for index, (parameter, home) in enumerate(zip(unit.parameters, unit.homes)):
                if write_back and unit.optimizers[index] is not None:
                    home.copy_(parameter.data, non_blocking=True)
                place(parameter, home)
            if unit.state_in:
                for optimizer, homes in zip(unit.optimizers, unit.state_homes):
                    if optimizer is not None:
                        self._state_out(optimizer, homes)
        unit.weights_in = unit.state_in = False
        unit.ready = None

    def _state_out(self, optimizer: torch.optim.Optimizer, homes: dict) -> None:
        state = optimizer.state[optimizer.param_groups[0]["params"][0]]
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            home = homes.get(key)
            if home is None or home.shape != value.shape or home.dtype != value.dtype:
                home = homes[key] = host_tensor(value, self.device)
            home.copy_(value, non_blocking=True)
            if self.stream is not None:
                value.record_stream(self.stream)  # made by the optimizer on the compute stream
            state[key] = home


def place(parameter: torch.Tensor, data: torch.Tensor) -> None:
    """Points the weight at `data` (host or device memory); the Parameter object, which the optimizer,
    autograd and the module hold, stays the same."""
    parameter.data = data


def _on(stream):
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
