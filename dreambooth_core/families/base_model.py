"""The base model a run starts from: fetched as a local diffusers folder (dreambooth_core.model.fetch)
and recognised as one of the families, or refused with the reason right after the fetch; and
the step of the sides of its photos' aspect-ratio buckets."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field

from dreambooth_core.config import BaseModelSettings, TrainingSettings
from dreambooth_core.families import SUPPORTED, TINY_MODELS, detect_family, family_of, single_file_family
from dreambooth_core.families.family import ModelFamily
from dreambooth_core.model.conversion import Converter, weight_names
from dreambooth_core.model.fetch import FetchedModel, ModelSources, fetch_model_files
from dreambooth_core.model.vae import with_vae
from dreambooth_core.photos.buckets import bucket_step

ACCEPTED_SPECS = (
    f"a tiny model ({', '.join(f'{spec!r}' for spec in TINY_MODELS)}), a local diffusers folder (with "
    "model_index.json), a local .ckpt or .safetensors file, an http(s):// URL to a .ckpt or .safetensors "
    "file, or a Hugging Face repo id like stable-diffusion-v1-5/stable-diffusion-v1-5")


class LocalModel(FetchedModel):
    """A base model ready to load from local disk, with what its configs say it is."""

    family: ModelFamily = Field(description="Read from the folder's configs: family, prediction "
                                "type and native resolution.")

    @classmethod
    def of(cls, fetched: FetchedModel) -> "LocalModel":
        return cls(**fetched.model_dump(), family=detect_family(fetched.path))

    @classmethod
    def at(cls, path: str | Path, digest: str, kind: str, source: str) -> "LocalModel":
        """The model in diffusers folder `path`; refused (ModelError) when no family takes it."""
        return cls.of(FetchedModel(path=str(path), digest=digest, kind=kind, source=source))


def fetch_model(spec: str, cache_dir: Path, revision: str | None = None, model_config: str | None = None,
                hf_token: str | None = None,
                log: logging.Logger = logging.getLogger("dreambooth")) -> LocalModel:
    """Make the model named by `spec` available locally, fetching or converting it only once
    (dreambooth_core.model.fetch.fetch_model_files); refused when no family takes it."""
    return LocalModel.of(fetch_model_files(spec, cache_dir, model_sources(), revision, model_config,
                                           hf_token, log))


def fetch_base(base: BaseModelSettings, cache_dir: Path, hf_token: str | None = None,
               log: logging.Logger = logging.getLogger("dreambooth")) -> LocalModel:
    """The model the settings name, with their --vae in place of its own when one is given."""
    fetched = fetch_model_files(base.model, cache_dir, model_sources(), base.revision,
                                base.single_file_config, hf_token, log)
    return LocalModel.of(with_vae(fetched, base.vae, cache_dir, hf_token, log) if base.vae else fetched)


def model_sources() -> ModelSources:
    # Looked up at call time, so that tests can replace a tiny builder.
    return ModelSources(tiny={spec: (tiny.version, tiny.build) for spec, tiny in TINY_MODELS.items()},
                        recognise=detect_family, choose_converter=_converter, accepted=ACCEPTED_SPECS)


def _converter(weights: Path, source: Path) -> Converter:
    return single_file_family(weight_names(weights), str(source)).convert_single_file


# Whether a run's photos go into aspect-ratio buckets, and the step of their sides (photos/buckets.py).
def bucket_step_for(training: TrainingSettings, model: LocalModel, resolution: int) -> int:
    """0 for square photos; else the step of the buckets' sides for `model` at `resolution`."""
    family = family_of(model.family)
    if not training.uses_buckets(family.buckets_by_default):
        return 0
    return bucket_step(resolution, family.pixel_multiple(Path(model.path)))


__all__ = ["ACCEPTED_SPECS", "SUPPORTED", "LocalModel", "bucket_step_for", "fetch_base", "fetch_model",
           "model_sources"]
