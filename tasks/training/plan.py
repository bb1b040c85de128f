"""The training plan: fingerprint, options, chunks, and where to resume."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict

from tasks.captions.classes import parse_class_words
from tasks.config import (DEFAULT_LEARNING_RATES, Chunk, DreamBoothConfig, differing_fields, digest,
                          plan_chunks, total_steps)
from tasks.errors import ConfigError
from tasks.generation.class_images import ClassImages
from tasks.generation.samples import SampleSettings
from tasks.session import Session
from tasks.session_state import SessionRef, read_state, update_state
from tasks.training.checkpoint import CheckpointStore
from tasks.training.model_parts import resolve_device
from tasks.training.options import TrainingOptions


class Extras(BaseModel):
    """What a chunk writes besides its checkpoint: samples and snapshots."""

    model_config = ConfigDict(frozen=True)
    samples: SampleSettings | None = None
    sample_every: int = 1
    snapshot_every: int = 0
    keep_snapshots: int = 3


class TrainingPlan(BaseModel):
    """Everything a chunk needs, small enough to be a task parameter."""

    model_config = ConfigDict(frozen=True)
    session: SessionRef
    model_path: str
    fingerprint: str
    total_steps: int
    chunks: list[Chunk]
    resume_step: int
    options: TrainingOptions
    class_images: ClassImages | None = None
    extras: Extras = Extras()
    keep_checkpoints: int
    device: str
    export_precision: str
    exported: bool  # outputs for exactly this plan are already in the session


def export_record(fingerprint: str, steps: int, precision: str) -> dict:
    return {"fingerprint": fingerprint, "step": steps, "precision": precision}


def resolve_precision(requested: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def training_options(config: DreamBoothConfig, total: int, device: torch.device) -> TrainingOptions:
    words = parse_class_words(config.class_word)
    same_word = words.get(None) if len(words) == 1 else None
    if config.optimizer == "adamw-8bit" and device.type != "cuda":
        raise ConfigError(f"--optimizer adamw-8bit needs a CUDA GPU (bitsandbytes); this run trains "
                          f"on {device.type}. Use --optimizer adamw.")
    if config.ema_decay and config.method == "textual-inversion":
        raise ConfigError("--ema-decay averages UNet weights, which textual inversion does not "
                          "train. Drop --ema-decay or use --method dreambooth or lora.")
    return TrainingOptions(
        seed=config.seed, method=config.method, total_steps=total,
        learning_rate=config.learning_rate or DEFAULT_LEARNING_RATES[config.method],
        lr_schedule=config.lr_schedule, warmup_steps=config.warmup_steps,
        batch_size=config.batch_size, gradient_accumulation=config.gradient_accumulation,
        mixed_precision=resolve_precision(config.mixed_precision, device),
        optimizer=config.optimizer, gradient_checkpointing=config.gradient_checkpointing,
        max_grad_norm=config.max_grad_norm, offset_noise=config.offset_noise,
        min_snr_gamma=config.min_snr_gamma, flip=config.flip, ema_decay=config.ema_decay,
        text_encoder_steps=0 if config.method == "textual-inversion" else config.text_encoder_steps,
        text_encoder_learning_rate=config.text_encoder_learning_rate,
        prior_loss_weight=config.prior_loss_weight, lora_rank=config.lora_rank,
        lora_alpha=config.lora_alpha or config.lora_rank, lora_text_encoder=config.lora_text_encoder,
        initializer_word=config.initializer_word or same_word or "person",
        cache_latents=config.cache_latents, cache_text_embeddings=config.cache_text_embeddings,
        channels_last=config.channels_last, compile=config.compile)


def fingerprint_values(config: DreamBoothConfig, options: TrainingOptions, model_digest: str,
                       dataset_digest: str, class_images: ClassImages | None) -> dict:
    values = {**config.training_values(), "learning_rate": options.learning_rate,
              "mixed_precision": options.mixed_precision, "model content": model_digest,
              "dataset": dataset_digest}
    if class_images:
        values["class images"] = class_images.digest
    if options.lr_schedule != "constant":
        values["steps"] = options.total_steps  # the schedule's shape depends on it
    return values


def make_plan(session: Session, ref: SessionRef, config: DreamBoothConfig, model_path: str,
              model_digest: str, dataset_digest: str, photo_count: int,
              class_images: ClassImages | None = None, extras: Extras = Extras()) -> TrainingPlan:
    """Record the fingerprint on first use; refuse a session trained with another."""
    total = total_steps(config, photo_count)
    options = training_options(config, total, resolve_device(config.device))
    values = fingerprint_values(config, options, model_digest, dataset_digest, class_images)
    recorded = (read_state(session) or {}).get("fingerprint")
    if recorded is not None and recorded != values:
        raise ConfigError(
            f"session {session.name!r} was trained on different inputs: "
            f"{', '.join(differing_fields(recorded, values))} changed. Restore them (for a hub "
            "model, pin --revision) or start a new --session.")
    resume = CheckpointStore(session, config.keep_checkpoints).latest_step()
    if resume > total:
        raise ConfigError(f"--steps {total} is below the {resume} steps session {session.name!r} "
                          f"has already trained. Pass --steps {resume} or more.")
    state = update_state(session, fingerprint=values, total_steps=total)
    record = export_record(digest(values), total, config.export_precision)
    exported = state.get("export") == record and all(map(session.exists, state.get("outputs", {})))
    return TrainingPlan(
        session=ref, model_path=model_path, fingerprint=digest(values), total_steps=total,
        chunks=plan_chunks(total, config.chunk_steps), resume_step=resume, options=options,
        class_images=class_images, extras=extras, keep_checkpoints=config.keep_checkpoints,
        device=config.device, export_precision=config.export_precision, exported=exported)
