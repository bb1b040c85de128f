"""What every exported .safetensors says about how it was trained, in the keys tools read.

- `modelspec.*`: Stability AI's model spec (what the file is, its base architecture,
  resolution, trigger words);
- `ss_*`: the training keys kohya's sd-scripts write, which AUTOMATIC1111 and Forge show in
  a network's metadata (and tell SD 1, SD 2 and SDXL networks apart by) and model sites
  such as Civitai read: base model, network dim and alpha, resolution, steps, dataset size,
  tag frequency of the captions.

Only what describes the training goes in: no local path (a local base model is named by its
folder or file name), no storage URL, no token, no host, and no time stamp (a re-export of the
same step writes the same bytes, so a publish uploads nothing new).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from dreambooth_core.config import TrainingSettings
from dreambooth_core.families import ModelFamily, family_of
from dreambooth_core.model.safetensors_files import add_metadata
from dreambooth_core.session.class_images import ClassImages
from dreambooth_core.session.dataset_manifest import require_dataset_manifest
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import CLASS_MANIFEST, DIFFUSERS
from dreambooth_core.session.state import load_state

# What the architecture of a file of each method is called, after the base model's.
_METHOD_SUFFIX = {"dreambooth": "", "lora": "/lora", "textual-inversion": "/textual-inversion"}
_OPTIMIZERS = {"adamw": "torch.optim.AdamW", "adamw-8bit": "bitsandbytes.optim.AdamW8bit"}


class TrainingRecord(BaseModel):
    """How a session was trained, as its files describe it (read from the session)."""

    model_config = ConfigDict(frozen=True)
    base_model: str  # as the user named it, a local path cut to its last part
    vae: str | None
    training: TrainingSettings  # with the memory plan applied
    gradient_checkpointing: bool
    cache_latents: bool
    total_steps: int
    resolution: int
    captions: dict[str, list[str]]  # subject token -> the caption of each photo
    class_images: int


def public_name(model: str) -> str:
    """A base model's name with nothing of this machine: a hub repo id or a tiny model as given,
    a local path or URL by its last part (a URL's query may hold a token)."""
    parts = urlsplit(model)
    if parts.scheme in ("http", "https", "gs", "s3"):
        return Path(parts.path).name
    if "/" in model and not Path(model).expanduser().exists() and not model.startswith((".", "/", "~")):
        return model  # a hub repo id
    return Path(model).name


def training_record(session: Session) -> TrainingRecord:
    state = load_state(session)
    config = state.config
    training, runtime = config.training, config.runtime
    if state.memory_plan:
        training, runtime = state.memory_plan.apply(training, runtime)
    manifest = require_dataset_manifest(session)
    captions: dict[str, list[str]] = {}
    for item in manifest.items:
        captions.setdefault(item.token or "", []).append(item.caption or "")
    class_images = 0
    if session.exists(CLASS_MANIFEST):
        sets = ClassImages.model_validate(session.read_json(CLASS_MANIFEST)).sets
        class_images = sum(len(s.files) for s in sets)
    vae = config.base_model.vae
    return TrainingRecord(
        base_model=public_name(config.base_model.model), vae=public_name(vae) if vae else None,
        training=training, gradient_checkpointing=runtime.gradient_checkpointing,
        cache_latents=runtime.cache_latents,
        total_steps=state.total_steps or training.total_steps(len(manifest.items)),
        resolution=manifest.resolution, captions=captions, class_images=class_images)


def tag_frequency(captions: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """kohya's `ss_tag_frequency`: per dataset folder (here: per subject), how many captions hold
    each comma-separated tag."""
    return {token: dict(Counter(tag.strip() for caption in texts for tag in caption.split(",")
                                if tag.strip()))
            for token, texts in captions.items()}


def training_keys(record: TrainingRecord, step: int) -> dict[str, str]:
    """The `ss_*` keys of kohya's train_network.py that apply, as it writes them (str() of each value)."""
    training = record.training
    photos = sum(map(len, record.captions.values()))
    batch = training.batch_size * training.gradient_accumulation * training.gpus
    keys = {
        "ss_sd_model_name": record.base_model,
        "ss_learning_rate": training.base_learning_rate, "ss_unet_lr": training.base_learning_rate,
        "ss_num_train_images": photos, "ss_num_reg_images": record.class_images,
        "ss_num_batches_per_epoch": math.ceil(photos / training.batch_size),
        "ss_num_epochs": math.ceil(record.total_steps * batch / max(photos, 1)),
        "ss_max_train_steps": record.total_steps, "ss_steps": step,
        "ss_gradient_checkpointing": record.gradient_checkpointing,
        "ss_gradient_accumulation_steps": training.gradient_accumulation,
        "ss_lr_warmup_steps": training.warmup_steps, "ss_lr_scheduler": training.lr_schedule,
        "ss_mixed_precision": training.mixed_precision, "ss_seed": training.seed,
        "ss_optimizer": _OPTIMIZERS[training.optimizer], "ss_max_grad_norm": training.max_grad_norm,
        "ss_noise_offset": training.offset_noise or None, "ss_min_snr_gamma": training.min_snr_gamma or None,
        "ss_cache_latents": record.cache_latents, "ss_flip_aug": training.flip,
        "ss_batch_size_per_device": training.batch_size, "ss_total_batch_size": batch,
        "ss_resolution": (record.resolution, record.resolution), "ss_enable_bucket": False,
        "ss_prior_loss_weight": training.prior_loss_weight if record.class_images else None,
        "ss_dataset_dirs": json.dumps({token: {"n_repeats": 1, "img_count": len(texts)}
                                       for token, texts in record.captions.items()}),
        "ss_tag_frequency": json.dumps(tag_frequency(record.captions)),
        "ss_training_comment": f"{training.method} trained with dreambooth-pipeline",
    }
    if training.trains_text_encoder:
        keys["ss_text_encoder_lr"] = training.text_encoder_learning_rate
    if training.method == "lora":
        alpha = training.lora_scale_alpha  # as the LoRA writers put it (peft_layers.network_metadata)
        keys |= {"ss_network_module": "networks.lora", "ss_network_dim": training.lora_rank,
                 "ss_network_alpha": int(alpha) if float(alpha).is_integer() else alpha}
    if record.vae:
        keys["ss_vae_name"] = record.vae
    return {key: str(value) for key, value in keys.items() if value is not None}


def export_metadata(record: TrainingRecord, facts: ModelFamily, model_path: str, step: int) -> dict[str, str]:
    """Every key but the per-file ones (the title and output name: the file's name)."""
    base = family_of(facts.family).base_model_keys(facts, model_path)
    suffix = _METHOD_SUFFIX[record.training.method]
    spec = {"modelspec.sai_model_spec": "1.0.1", **base,
            "modelspec.architecture": base["modelspec.architecture"] + suffix,
            "modelspec.resolution": f"{record.resolution}x{record.resolution}",
            "modelspec.trigger_phrase": ", ".join(t for t in record.captions if t)}
    if suffix:  # a LoRA or embedding is not a model on its own: kohya leaves prediction_type out
        spec.pop("modelspec.prediction_type", None)
    return spec | training_keys(record, step)


def stamp_files(out: Path, names: list[str], metadata: dict[str, str]) -> None:
    """Add `metadata` to every .safetensors file among `names` in `out` (and in their folders),
    each titled by its file name; not to the parts of a full model's diffusers folder, which only
    diffusers reads, each a component and not the trained model."""
    for name in names:
        path = out / name
        files = [path] if path.is_file() else [] if name == DIFFUSERS else sorted(path.rglob("*"))
        for file in files:
            if file.suffix == ".safetensors":
                title = file.stem if file.parent == out else file.parent.name
                add_metadata(file, {**metadata, "modelspec.title": title, "ss_output_name": title})
