"""The step of the buckets' sides per family, from the published configs (nothing downloaded)."""

from pathlib import Path

import pytest

from dreambooth_core.config import TrainingSettings
from dreambooth_core.families import detect_family, write_config_folder
from dreambooth_core.families.base_model import LocalModel, bucket_step_for
from dreambooth_core.photos.buckets import bucket_grid


def model(folder: Path) -> LocalModel:
    return LocalModel(path=str(folder), digest="d", kind="local", source=str(folder), family=detect_family(folder))


# (architecture, what its denoiser divides, auto's choice, the step at its own resolution)
CASES = [("sd15", 64, False, 64), ("sd21-768-v", 64, False, 64), ("sdxl", 32, True, 64),
         ("flux1-dev", 16, True, 64), ("flux2-klein-4b", 16, True, 64)]


@pytest.mark.parametrize("architecture, multiple, auto, step", CASES)
def test_each_family_has_its_pixel_multiple_and_default(tmp_path, architecture, multiple, auto, step):
    found = model(write_config_folder(architecture, tmp_path))
    from dreambooth_core.families import family_of

    assert family_of(found.family).pixel_multiple(tmp_path) == multiple
    resolution = found.family.resolution
    assert bucket_step_for(TrainingSettings(), found, resolution) == (step if auto else 0)
    on = bucket_step_for(TrainingSettings(buckets="on"), found, resolution)
    assert on == step and all(w % multiple == 0 and h % multiple == 0 for w, h in bucket_grid(resolution, on))
    assert bucket_step_for(TrainingSettings(buckets="off"), found, resolution) == 0
