"""Whether a run's photos go into aspect-ratio buckets, and the step of their sides (photos/buckets.py)."""

from __future__ import annotations

from pathlib import Path

from dreambooth_core.config import TrainingSettings
from dreambooth_core.families import family_of
from dreambooth_core.families.base_model import LocalModel
from dreambooth_core.photos.buckets import bucket_step


def bucket_step_for(training: TrainingSettings, model: LocalModel, resolution: int) -> int:
    """0 for square photos; else the step of the buckets' sides for `model` at `resolution`."""
    family = family_of(model.family)
    if not training.uses_buckets(family.buckets_by_default):
        return 0
    return bucket_step(resolution, family.pixel_multiple(Path(model.path)))
