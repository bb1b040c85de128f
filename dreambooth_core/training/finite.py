"""A loss or weight that is not a finite number stops training before its chunk commits.

NaN spreads through every later step, so a checkpoint of it would become the
latest one and the export a model of NaNs. The check reads the chunk's losses in
one batch (a host-device sync, as the loss log's own reads are) and reduces each
trained tensor to one flag on the device.
"""

from __future__ import annotations

import torch

from dreambooth_core.errors import TrainingError


def first_bad_step(losses: list[torch.Tensor], start: int, world: int = 1) -> int | None:
    """The 1-based step whose loss is not finite, first of steps start+1... (None: all are).
    With several processes they agree on it, so they all stop at the same step."""
    bad = (~torch.isfinite(torch.stack(losses).float())).float()
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    found = bad.nonzero()
    return start + int(found[0]) + 1 if len(found) else None


def weights_finite(tensors: list[torch.Tensor], dtype: torch.dtype | None = None) -> bool:
    """Whether every value is finite (also once cast to `dtype`: fp16 ends at 65504)."""
    if not tensors:
        return True
    # One device for the flags: --offload keeps most trained weights on the host, the rest on the GPU.
    device = next((t.device for t in tensors if t.device.type != "cpu"), tensors[0].device)
    flags = torch.stack([torch.isfinite(t.detach() if dtype is None else t.detach().to(dtype)).all()
                         .to(device) for t in tensors])
    return bool(flags.all())


def check_training_finite(losses: list[torch.Tensor], weights: list[torch.Tensor], start: int,
                          reached: int, advice: str, world: int = 1) -> None:
    """Raise a TrainingError naming the first bad step when training went non-finite in
    steps start+1..reached; the checkpoint at `start` (if any) stays the latest."""
    step = first_bad_step(losses, start, world)
    if step is None and weights_finite(weights):
        return
    what = f"the loss became {_value(losses[step - start - 1])} at step {step}" if step is not None \
        else f"the weights became NaN or infinite by step {reached}"
    kept = f"the checkpoint at step {start} stays the latest" if start else "nothing was committed"
    raise TrainingError(f"training stopped: {what}. Steps {start + 1}-{reached} were not saved "
                        f"({kept}), so no model of NaNs is written. {advice}")


def _value(loss: torch.Tensor) -> str:
    value = float(loss)
    return "NaN" if value != value else "infinite"


def divergence_advice(learning_rate: float, precision: str) -> str:
    """What to try, given this run's learning rate and autocast precision. Both settings
    change training, so they take a new session."""
    tips = [f"a lower --learning-rate (this run: {learning_rate:g})"]
    if precision != "no":
        tips.append(f"--mixed-precision no (fp32; this run: {precision})")
    if precision != "fp16":
        tips.append("on a GPU, --mixed-precision fp16, whose loss scaling skips steps that overflow")
    return "Train a new --session with " + ", or ".join(tips) + "."
