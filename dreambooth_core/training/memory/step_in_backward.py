"""The optimizer step taken inside the backward pass, a weight at a time.

A full fine-tune normally holds a gradient for every trained weight until the
backward pass ends (SDXL's UNet: 9.6 GiB in fp32). Here each weight has its own
optimizer, stepped by a hook the moment autograd has accumulated that weight's
gradient, which is then freed: at most a few gradients exist at once (kohya's
"fused backward pass"). The update is AdamW's, weight by weight; what differs
from the usual step is the clipping, which can only see one gradient at a time:
each weight's gradient is clipped to --max-grad-norm on its own. Loss scaling
(fp16) needs every gradient before any step, and gradient accumulation and
several processes need whole gradients too: those are refused.
"""

from __future__ import annotations

from typing import Callable

import torch

from dreambooth_core.errors import ConfigError, SessionError

MakeOptimizer = Callable[[list[dict]], torch.optim.Optimizer]


def refuse_fp16(precision: str) -> None:
    """--mixed-precision auto resolves to fp16 on GPUs without bf16 (settings catch an explicit fp16)."""
    if precision == "fp16":
        raise ConfigError("--step-in-backward cannot train in fp16 (this GPU has no bf16): loss scaling "
                          "checks every gradient before any weight is updated. Train without "
                          "--step-in-backward (e.g. --optimizer adamw-8bit), or on a GPU with bf16 "
                          "(Ampere or newer).")


class StepInBackward:
    """Optimizers of one weight each (from `make`, with the hyperparameters of the weight's group),
    stepped from the weight's post-accumulate-grad hook. Looks like one optimizer to the
    Trainer: `param_groups`, `state`, `state_dict`, `load_state_dict`, `zero_grad`."""

    def __init__(self, groups: list[dict], make: MakeOptimizer, max_grad_norm: float):
        self.optimizers = [make([{**group, "params": [p]}]) for group in groups for p in group["params"]]
        self.max_grad_norm = max_grad_norm
        self._hooks = []
        for optimizer in self.optimizers:
            parameter = optimizer.param_groups[0]["params"][0]
            frozen_now = not parameter.requires_grad  # e.g. the text encoder after its phase
            parameter.requires_grad_(True)  # torch hooks only tensors that take gradients
            self._hooks.append(parameter.register_post_accumulate_grad_hook(self._stepper(optimizer)))
            parameter.requires_grad_(not frozen_now)

    def _stepper(self, optimizer: torch.optim.Optimizer):
        def step(parameter: torch.Tensor) -> None:
            with torch.no_grad():
                torch.nn.utils.clip_grad_norm_([parameter], self.max_grad_norm)
                optimizer.step()
            parameter.grad = None
        return step

    def remove_hooks(self) -> None:
        """For a model trained on by another Trainer later (benchmarks): its weights stop being
        stepped by these optimizers."""
        for hook in self._hooks:
            hook.remove()

    @property
    def param_groups(self) -> list[dict]:
        return [group for o in self.optimizers for group in o.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for o in self.optimizers for p, s in o.state.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"per_weight": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("per_weight")
        if saved is None or len(saved) != len(self.optimizers):
            raise SessionError("the checkpoint's optimizer state was not saved with --step-in-backward for "
                              "these weights; resume with the settings the session started with.")
        for optimizer, one in zip(self.optimizers, saved):
            optimizer.load_state_dict(one)
