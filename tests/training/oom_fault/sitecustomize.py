"""Test-only fault injection: DREAMBOOTH_OOM_AT_STEP=N makes training step N raise the error
CUDA raises when the GPU's memory is used up (torch.OutOfMemoryError), as a GPU too small
for the run would."""

import os

_at = os.environ.get("DREAMBOOTH_OOM_AT_STEP")
if _at:
    import torch

    from dreambooth_core.training import trainer as _trainer

    _original = _trainer.Trainer.step

    def _step(self, step):
        if step == int(_at):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 14.75 GiB "
                                         "total capacity; 14.60 GiB already allocated)")
        return _original(self, step)

    _trainer.Trainer.step = _step
