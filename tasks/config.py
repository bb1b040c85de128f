"""The one configuration object, and the values derived from it.

Derived values (resolution, total steps, chunk plan, training fingerprint) are
computed by functions here and never written back into the config.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.captions.classes import parse_class_words

SESSION_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
STEPS_PER_PHOTO = 100

# Fields whose change would change the trained weights. `steps` is absent on
# purpose: with a constant learning rate, randomness drawn per step and data
# order per epoch, training to 2000 steps passes through the exact state a
# 500-step run ends in, so a finished session can be trained further.
TRAINING_FIELDS = (
    "model", "revision", "single_file_config", "token", "instance_prompt", "class_word",
    "resolution", "seed", "learning_rate", "max_grad_norm", "method", "lr_schedule",
    "warmup_steps", "batch_size", "gradient_accumulation", "mixed_precision", "optimizer",
    "offset_noise", "min_snr_gamma", "flip", "ema_decay", "text_encoder_steps",
    "text_encoder_learning_rate", "class_images", "class_prompt", "class_images_folder",
    "prior_loss_weight", "lora_rank", "lora_alpha", "lora_text_encoder", "initializer_word",
)
DEFAULT_LEARNING_RATES = {"dreambooth": 2e-6, "lora": 1e-4, "textual-inversion": 5e-4}


class DreamBoothConfig(BaseModel):
    """Everything a training run needs. CLI flags, YAML and deployment
    parameters all become this object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session: str = Field(description="Session name: letters, digits, '.', '_' or '-' (at most 64). "
                         "The session holds photos, progress and outputs; rerun it to resume.")
    storage: str = Field("sessions", description="Where sessions live: a folder, memory://, "
                         "or gs://bucket/prefix (any fsspec URL).")
    photos: str | None = Field(None, description="Folder of photos for a new session; later runs "
                               "use the session's own copy.")
    model: str = Field("stable-diffusion-v1-5/stable-diffusion-v1-5", description="Base model: "
                       "a Hugging Face repo id, a local diffusers folder, a .ckpt/.safetensors file "
                       "or URL, or 'tiny' (a small random SD 1 model for offline demos and tests; "
                       "'tiny-sd2', 'tiny-sd2-v' for SD 2.x).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of --model.")
    single_file_config: str | None = Field(None, description="For a single-file --model: a diffusers "
                                           "folder or repo id describing its architecture.")
    token: str | None = Field(None, description="Identifier word for the subject (default: "
                              "taken from the photo file names, 'shrk (1).jpg' -> shrk, or from "
                              "sub-folders of the photos named after each subject's token).")
    instance_prompt: str = Field("photo of {token} {class}", description="Caption of every photo "
                                 "without a caption file; {token} and {class} are replaced by the "
                                 "subject's identifier and class word.")
    class_word: str | None = Field(None, description="What the subjects are: one word for all "
                                   "('man', 'woman', 'person', 'dog', 'style') or one per subject "
                                   "('shrk=man,ohwx=dog'). Captions become 'photo of shrk man'.")
    bad_token: Literal["stop", "warn"] = Field("stop", description="When the token analysis calls "
                                               "a subject's token bad: stop before training, or "
                                               "warn and train anyway.")
    subject_type: Literal["auto", "person", "other"] = Field("auto", description="Whether the "
                                                         "subjects are people, which turns on the "
                                                         "face checks (one face per photo, framing "
                                                         "mix): auto decides from the class word "
                                                         "(person, man, woman, girl... or none: "
                                                         "person; dog, style...: other).")
    allow_several_faces: bool = Field(False, description="Accept photos of a person subject that "
                                      "show several faces (otherwise an error).")
    resolution: int | None = Field(None, ge=64, description="Training size in pixels, a multiple "
                                   "of 8 (default: the base model's own, 512 for SD 1.x).")
    steps: int | None = Field(None, ge=1, description=f"Total UNet training steps (default: "
                              f"{STEPS_PER_PHOTO} x number of photos).")
    chunk_steps: int = Field(500, ge=1, description="Steps between committed checkpoints; "
                             "a killed run loses at most this many.")
    seed: int = Field(0, ge=0, description="Seed of all training randomness.")
    method: Literal["dreambooth", "lora", "textual-inversion"] = Field(
        "dreambooth", description="What to train: dreambooth (the whole UNet, a full model), lora "
        "(small adapters, a few-MB file) or textual-inversion (one new word's embedding).")
    learning_rate: float | None = Field(None, gt=0, description="Learning rate (default: 2e-6 "
                                        "dreambooth, 1e-4 lora, 5e-4 textual-inversion).")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Learning-rate schedule after warm-up, decaying to 0 at the last "
        "step for linear and cosine.")
    warmup_steps: int = Field(0, ge=0, description="Steps of linear learning-rate warm-up from 0.")
    batch_size: int = Field(1, ge=1, description="Photos per micro-batch (each with a class image "
                            "when prior preservation is on).")
    gradient_accumulation: int = Field(1, ge=1, description="Micro-batches per optimizer step; "
                                       "the effective batch is batch size x this.")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto", description="Autocast precision: auto is bf16 on GPUs that have it, fp16 (with a "
        "loss scaler) on older GPUs, no (fp32) on CPU.")
    optimizer: Literal["adamw", "adamw-8bit"] = Field(
        "adamw", description="adamw, or adamw-8bit (bitsandbytes, CUDA only: a quarter of the "
        "optimizer memory).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward "
                                         "pass: much less GPU memory, about a third slower; same result.")
    offset_noise: float = Field(0.0, ge=0, description="Offset-noise strength (e.g. 0.1) for "
                                "darker darks and brighter brights; 0 is off.")
    min_snr_gamma: float = Field(0.0, ge=0, description="Min-SNR loss weighting gamma (5 is "
                                 "the paper's); 0 is off.")
    flip: bool = Field(False, description="Randomly mirror photos left-right (doubles the "
                       "variety; avoid for asymmetric subjects such as text or a side parting).")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="Keep an exponential moving average of "
                             "the UNet weights with this decay (e.g. 0.999) and export it; 0 is off.")
    text_encoder_steps: int = Field(350, ge=0, description="Train the text encoder with the UNet "
                                    "for the first N steps, then freeze it; 0 is off.")
    text_encoder_learning_rate: float = Field(1e-6, gt=0, description="Text encoder learning rate.")
    class_images: int = Field(200, ge=0, description="Prior preservation: class images per "
                              "subject, generated once with the base model and reused; used when "
                              "a class word is set; 0 is off.")
    class_prompt: str = Field("photo of {class}", description="Prompt of the class images; {class} "
                              "is replaced by the subject's class word.")
    class_images_folder: str | None = Field(None, description="Your own class images instead of "
                                            "generated ones (sub-folders per subject token when "
                                            "subjects differ in class).")
    prior_loss_weight: float = Field(1.0, ge=0, description="Weight of the prior-preservation loss.")
    lora_rank: int = Field(8, ge=1, description="LoRA rank (adapter size).")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha (scale alpha/rank; "
                                     "default: the rank).")
    lora_text_encoder: bool = Field(False, description="LoRA: adapters on the text encoder too, "
                                    "for the --text-encoder-steps phase.")
    initializer_word: str | None = Field(None, description="Textual inversion: the word whose "
                                         "embedding the new token starts from (default: the class "
                                         "word, else 'person').")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clipping threshold.")
    cache_latents: bool = Field(True, description="Encode each photo (and its mirror image) with "
                                "the VAE once, not at every step; same result, faster.")
    cache_text_embeddings: bool = Field(True, description="Encode each caption once while the "
                                        "text encoder is frozen; same result, faster.")
    channels_last: bool = Field(False, description="UNet in channels-last memory layout (can be "
                                "faster with mixed precision on GPUs).")
    compile: bool = Field(False, description="torch.compile the UNet: slower start, faster "
                          "steps on GPUs.")
    sample_prompts: str | None = Field(None, description="Your own sample prompts, separated by "
                                       "';', rendered after each subject's caption; {token} and "
                                       "{class} are filled in per subject.")
    sample_every: int = Field(1, ge=0, description="Render samples after every N chunks "
                              "(samples/step-N.png and the UI); 0 is never.")
    sample_steps: int = Field(20, ge=1, description="Inference steps of each sample image.")
    snapshot_every: int = Field(0, ge=0, description="Also save a small fp16 model (or LoRA, or "
                                "embedding) every N steps in snapshots/, to pick the best later; "
                                "0 is off.")
    keep_snapshots: int = Field(3, ge=1, description="Snapshots to keep (the newest).")
    keep_checkpoints: int = Field(2, ge=2, description="Committed checkpoints to keep (at least 2).")
    export_precision: Literal["fp16", "fp32"] = Field("fp16", description="Precision of the "
                                                      "exported .ckpt/.safetensors files.")
    device: str = Field("auto", description="Training device: auto (CUDA when available), cpu, cuda.")

    @field_validator("session")
    @classmethod
    def _session_name(cls, name: str) -> str:
        if not SESSION_NAME.match(name) or name in {".", ".."}:
            raise ValueError(f"session name {name!r} is not allowed: use at most 64 letters, "
                             "digits, '.', '_' or '-' (no slashes, no '..')")
        return name

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"resolution {value} is not a multiple of 8; try {value - value % 8}")
        return value

    @field_validator("class_word")
    @classmethod
    def _class_words(cls, value: str | None) -> str | None:
        parse_class_words(value)
        return value

    def training_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in TRAINING_FIELDS}


class Chunk(BaseModel):
    """Steps [start, end) of training, committed as one checkpoint at `end`."""

    model_config = ConfigDict(frozen=True)
    index: int
    count: int
    start: int
    end: int


def total_steps(config: DreamBoothConfig, photo_count: int) -> int:
    return config.steps if config.steps is not None else STEPS_PER_PHOTO * photo_count


def plan_chunks(total: int, chunk_steps: int) -> list[Chunk]:
    """Chunks end on multiples of chunk_steps, so extending a run keeps earlier ones."""
    ends = list(range(chunk_steps, total, chunk_steps)) + [total]
    starts = [0] + ends[:-1]
    return [Chunk(index=i + 1, count=len(ends), start=s, end=e)
            for i, (s, e) in enumerate(zip(starts, ends))]


def digest(value: Any) -> str:
    """A short stable hash of JSON-able data."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differing_fields(stored: dict[str, Any], given: dict[str, Any]) -> list[str]:
    return sorted(k for k in stored.keys() | given.keys() if stored.get(k) != given.get(k))
