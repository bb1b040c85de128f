"""What differs between model families, behind one interface.

A family is everything the tool must know about one kind of base model: how it is
recognised from a diffusers folder's configs (and a look-alike refused with the reason),
its components and how they load, how captions become conditioning, what the denoiser is
trained to predict, the pipeline that renders with it, where LoRA adapters go, whether
textual inversion can train, the files an export writes, its published configs and a tiny
offline builder. Training, exports, checks and reports call this interface; only the
modules of this package name a family.

`ModelFamily` holds the facts read from one model's configs; `family_of(facts)` (this
package's `__init__`) gives the `Family` that knows what to do with them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from dreambooth_core.errors import ModelError

if TYPE_CHECKING:  # torch and the libraries load where a family first needs them: not for `detect_family`
    import torch

    from dreambooth_core.captions.tokenizer import TextTokenizer

    from dreambooth_core.config import TrainingSettings
    from dreambooth_core.families.objectives import NoisyBatch, Objective
    from dreambooth_core.families.quantised import BasePrecision

PredictionType = Literal["epsilon", "v_prediction", "flow_matching"]


class ModelFamily(BaseModel):
    """What training and export need to know about a base model's architecture."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str = Field(description="The family's key, e.g. sd1, sd2, sdxl (see dreambooth_core/families).")
    prediction_type: PredictionType = Field(description="What the denoiser predicts.")
    resolution: int = Field(description="Image size the model was trained at, in pixels.")


@dataclass(frozen=True)
class TinyModel:
    """A small random model of a family, built locally (no network): demos and tests."""

    spec: str          # what --model names it
    version: str       # its cache folder: a new version is built again
    resolution: int
    build: Callable[[Path], Path]


@dataclass(frozen=True)
class Architecture:
    """A published model's configs, for sizing it without a download (estimates, `plan`)."""

    name: str
    repos: tuple[str, ...]  # the hub repos that hold it
    write: Callable[[Path], Path]  # a config-only diffusers folder of it


@dataclass
class ModelParts:
    """A model's parts as training holds them: the denoiser (a UNet or a transformer), the VAE, the
    text encoders with their tokenizers (a second for families with two), the noise scheduler."""

    family: Family
    denoiser: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    noise_scheduler: object
    text_encoder_2: torch.nn.Module | None = None
    tokenizer_2: object | None = None

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        return [e for e in (self.text_encoder, self.text_encoder_2) if e is not None]

    @property
    def tokenizers(self) -> list:
        return [t for t in (self.tokenizer, self.tokenizer_2) if t is not None]

    def to(self, device: torch.device, text_encoders: bool = True) -> None:
        """Moves every module that is not on `device` yet (one already there is left alone, and so is
        one partly there: --offload's denoiser, whose blocks stay on the host); the text encoders
        only with `text_encoders`."""
        for module in (self.denoiser, self.vae, *(self.text_encoders if text_encoders else ())):
            if all(p.device != device for p in module.parameters()):
                module.to(device)


@dataclass(frozen=True)
class Condition:
    """What the denoiser is conditioned on besides the noisy latents, per example of a batch:
    the text encoders' hidden states, and for families that take one a pooled text embedding."""

    hidden: torch.Tensor  # [batch, tokens, width]
    pooled: torch.Tensor | None = None  # [batch, width]

    @staticmethod
    def cat(conditions: list[Condition]) -> Condition:
        import torch

        pooled = [c.pooled for c in conditions]
        return Condition(torch.cat([c.hidden for c in conditions]),
                         None if pooled[0] is None else torch.cat(pooled))


@dataclass(frozen=True)
class ImageGeometry:
    """What a family may need to know of each image of a batch besides its pixels: its size, and
    for micro-conditioning the photo it was cropped from and whether it was mirrored."""

    height: int
    width: int
    original_size: tuple[int, int] | None = None  # the photo's upright (height, width); None: as it is
    crop_box: tuple[int, int, int, int] | None = None  # the crop taken from it (left, top, right, bottom)
    flip: bool = False


class Family:
    """The interface. Each family module defines a subclass and one instance of it."""

    defined: ClassVar[list[type[Family]]] = []  # every family, in the order its module was imported
    keys: ClassVar[tuple[str, ...]]  # the ModelFamily.family values it serves
    title: ClassVar[str]
    denoiser: ClassVar[str] = "unet"  # its folder, and its weights' prefix in checkpoints
    # The denoiser's modules LoRA adapts (peft's target_modules: name endings, or one whole-name regex).
    lora_targets: ClassVar[tuple[str, ...] | str]
    text_lora_targets: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "out_proj")
    trainable_text_encoders: ClassVar[int] = 2  # how many of its text encoders, first first, may train
    textual_inversion: ClassVar[str | None] = None  # why textual inversion cannot train (None: it can)
    uses_crop_boxes: ClassVar[bool] = False  # whether predict() reads ImageGeometry's photo and crop
    # --buckets auto: whether photos keep their aspect ratio in buckets of the training resolution's pixel
    # area (photos/buckets.py): yes where the model was trained on many aspect ratios at 1024 px; no where
    # the seed's square face crop is the rule (SD 1.x / 2.x, trained on 512 / 768 px squares).
    buckets_by_default: ClassVar[bool] = False
    render_scheduler: ClassVar[str]  # the scheduler its pipeline renders with (it keys stored class images)
    default_guidance: ClassVar[float] = 7.5  # the guidance scale it renders with unless told another
    # What --captions default means for it: 'token' (the instance prompt alone) or 'auto' (described photos).
    default_captions: ClassVar[str] = "token"
    tiny_models: ClassVar[tuple[TinyModel, ...]] = ()
    architectures: ClassVar[tuple[Architecture, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Family.defined.append(cls)

    # -- recognition -----------------------------------------------------------

    def recognise(self, folder: Path, index: dict) -> ModelFamily | None:
        """The facts of the diffusers folder when it holds this family (None when it does not);
        a ModelError when it looks like this family but is a variant the tool cannot train."""
        raise NotImplementedError

    def recognises_single_file(self, keys: set[str]) -> bool:
        return False

    def convert_single_file(self, weights: Path, options: dict, folder: Path, log: logging.Logger) -> None:
        """Write the diffusers folder of a single file this family recognises."""
        raise NotImplementedError

    # -- components -------------------------------------------------------------

    def check_settings(self, settings: TrainingSettings) -> None:
        """Refuse, with the reason, what this family cannot train (ConfigError)."""
        if settings.method == "textual-inversion" and self.textual_inversion:
            from dreambooth_core.errors import ConfigError

            raise ConfigError(self.textual_inversion)

    def load_parts(self, model_path: str | Path, device: torch.device, weights: bool = True,
                   base: BasePrecision | None = None) -> ModelParts:
        """The parts training needs; without `weights`, built from the configs (fake-tensor estimates).
        `base` quantised (quantised.py): the denoiser and text encoders load quantised."""
        raise NotImplementedError

    def encode(self, parts: ModelParts, captions: list[str], encoders: list[torch.nn.Module],
               device: torch.device) -> Condition:
        """The captions' conditioning through `encoders` (the parts' own, or wrappers of them)."""
        raise NotImplementedError

    def token_judges(self, model_path: str | Path) -> dict[str, TextTokenizer]:
        """The tokenizers that judge a subject's token, by the name its report shows (the first is the
        one captions are measured with)."""
        from dreambooth_core.captions.tokenizer import load_tokenizer

        return {"tokenizer": load_tokenizer(model_path)}

    def objective(self, parts: ModelParts, settings: TrainingSettings) -> Objective:
        raise NotImplementedError

    def pixel_multiple(self, folder: Path) -> int:
        """What the denoiser needs image sides to be a multiple of (aspect-ratio buckets): a UNet halves
        its latents once per down block after the first."""
        unet = read_config(folder, f"{self.denoiser}/config.json")
        return vae_scale(read_config(folder, "vae/config.json")) * 2 ** (len(unet["block_out_channels"]) - 1)

    def predict(self, denoiser: torch.nn.Module, batch: NoisyBatch, condition: Condition,
                images: list[ImageGeometry]) -> torch.Tensor:
        """The denoiser's prediction for a noisy batch (`denoiser`: the parts' own, or a wrapper of it)."""
        raise NotImplementedError

    # -- exports ----------------------------------------------------------------
    def base_model_keys(self, facts: ModelFamily, model_path: str) -> dict[str, str]:
        """The safetensors metadata naming the base architecture: `modelspec.architecture` and
        `modelspec.implementation` (Stability AI's model spec), kohya's `ss_base_model_version`
        and `ss_v2` (dreambooth_core/export/training_metadata.py adds the rest)."""
        raise NotImplementedError

    # Each writer puts files into the local folder `out` and returns the top-level names it made.

    def write_full_model(self, facts: ModelFamily, model_path: str, parts: ModelParts, name: str, step: int,
                         dtype: torch.dtype, out: Path) -> list[str]:
        raise NotImplementedError

    def write_full_snapshot(self, facts: ModelFamily, model_path: str, parts: ModelParts, name: str,
                            step: int,
                            path: Path) -> None:
        """The full model as one small fp16 file (snapshots)."""
        raise NotImplementedError

    def read_full_snapshot(self, parts: ModelParts, path: Path, model_path: str) -> None:
        """A full snapshot's weights in place of the parts' denoiser and text encoders (fp32)."""
        raise NotImplementedError

    def write_lora(self, denoiser: torch.nn.Module, encoders: list, name: str, dtype: torch.dtype,
                   out: Path) -> list[str]:
        """`encoders`: each text encoder carrying adapters, or None for one that does not."""
        raise NotImplementedError

    def write_lora_file(self, denoiser: torch.nn.Module, encoders: list, path: Path,
                        dtype: torch.dtype) -> None:
        """The LoRA as the one file tools load (snapshots)."""
        raise NotImplementedError

    def read_lora_file(self, denoiser: torch.nn.Module, encoders: list,
                       state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def write_embeddings(self, vectors: list[dict[str, torch.Tensor]], step: int, out: Path,
                         full: bool = True) -> list[str]:
        """`vectors`: each text encoder's learned vectors by token. Without `full`: a snapshot's files."""
        raise NotImplementedError

    def embedding_keys(self, encoders: int) -> tuple[str, ...]:
        """The keys of each encoder's vectors in a token's `<token>.safetensors`."""
        raise NotImplementedError

    # -- rendering --------------------------------------------------------------

    def pipeline(self, model_path: str | Path, device: torch.device, trained: ModelParts | None = None):
        """The diffusers pipeline that renders with the model (dreambooth_core/families/rendering.py)."""
        raise NotImplementedError


def token_ids(tokenizer, captions: list[str], device: torch.device) -> torch.Tensor:
    """Captions as token ids, padded (or cut) to the tokenizer's length, on `device`."""
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)


def load_component(kind, model_path: str | Path, subfolder: str, weights: bool,
                   base: BasePrecision | None = None) -> torch.nn.Module:
    """A diffusers or transformers model from its sub-folder: with its weights, or built from its
    config alone (random weights: what fake-tensor estimates run on); quantised when `base` is
    (a frozen part: the denoiser or a text encoder; quantised.py)."""
    from dreambooth_core.families.quantised import load_frozen, quantise_built

    quantised = base is not None and base.quantised
    if weights:
        if quantised:
            return load_frozen(kind, model_path, subfolder, base)
        return kind.from_pretrained(model_path, subfolder=subfolder)
    if hasattr(kind, "load_config"):  # diffusers
        module = kind.from_config(kind.load_config(model_path, subfolder=subfolder))
    else:
        module = kind(kind.config_class.from_pretrained(Path(model_path) / subfolder))
    if quantised and base.name != "nf4":  # bitsandbytes quantises only as it loads onto a real GPU
        quantise_built(module, base)
    return module


def as_training_parts(parts: ModelParts, device: torch.device) -> ModelParts:
    """fp32 master weights whatever the folder stores (a session's own fp16 export, for one), on
    `device`; the VAE and the text encoders frozen and in eval mode until a method trains them. A
    quantised part keeps its quantised weights as the library holds them (never re-cast)."""
    import torch

    from dreambooth_core.families.quantised import is_quantised, unquantised_to

    for module in (parts.denoiser, parts.vae, *parts.text_encoders):
        if is_quantised(module):
            unquantised_to(module, torch.float32)
            if next(module.parameters()).device != device:
                module.to(device)
        else:
            module.to(device=device, dtype=torch.float32)
    parts.vae.requires_grad_(False).eval()
    for encoder in parts.text_encoders:
        encoder.requires_grad_(False).eval()
    return parts


def import_model_classes() -> Iterator[str]:
    """Import the model libraries a piece at a time (seconds in all, on a CPU): the caller may stop
    between any two, e.g. when what it waited for is ready."""
    from transformers import CLIPTokenizer  # noqa: F401

    yield "CLIPTokenizer"
    from transformers import CLIPTextModel  # noqa: F401

    yield "CLIPTextModel"
    from diffusers import UNet2DConditionModel  # noqa: F401

    yield "UNet2DConditionModel"
    from diffusers import AutoencoderKL, DDPMScheduler  # noqa: F401

    yield "AutoencoderKL"


def read_config(folder: Path, relative: str) -> dict:
    path = Path(folder) / relative
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"The model folder {folder} has no {relative}, so its architecture cannot be told. "
            "Point --model at a complete diffusers folder (model_index.json and each part's folder with "
            "its config).") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} cannot be read as JSON ({exc}). The download may be damaged: "
                         "delete the folder and fetch the model again.") from None


def resolution_of(unet_config: dict, vae_config: dict) -> int:
    """The image size a model was trained at: the denoiser's sample size x the VAE's downscale factor."""
    return int(unet_config["sample_size"]) * vae_scale(vae_config)


def vae_scale(vae_config: dict) -> int:
    """Image pixels per latent pixel."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def supported() -> str:
    """The families' titles, for messages that say what the tool can train."""
    return ", ".join(family.title for family in Family.defined)


def unsupported(folder: Path, relative: str, why: str) -> ModelError:
    return ModelError(
        f"The model in {folder} is not one this tool can train: {relative} shows {why}. "
        f"Supported are {supported()}; pick such a base model with --model.")
