"""Training options: what the trainer needs from the configuration, resolved."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Method = Literal["dreambooth", "lora", "textual-inversion"]
Precision = Literal["no", "fp16", "bf16"]


class TrainingOptions(BaseModel):
    """Resolved settings: no 'auto' left, learning rates filled in per method."""

    model_config = ConfigDict(frozen=True)
    seed: int = 0
    method: Method = "dreambooth"
    total_steps: int = 1
    learning_rate: float = 2e-6
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    batch_size: int = 1
    gradient_accumulation: int = 1
    mixed_precision: Precision = "no"
    optimizer: Literal["adamw", "adamw-8bit"] = "adamw"
    gradient_checkpointing: bool = False
    max_grad_norm: float = 1.0
    offset_noise: float = 0.0
    min_snr_gamma: float = 0.0
    flip: bool = False
    ema_decay: float = 0.0
    text_encoder_steps: int = 0
    text_encoder_learning_rate: float = 1e-6
    prior_loss_weight: float = 1.0
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_text_encoder: bool = False
    initializer_word: str = "person"
    cache_latents: bool = True
    cache_text_embeddings: bool = True
    channels_last: bool = False
    compile: bool = False

    @property
    def trains_text_encoder(self) -> bool:
        return self.text_encoder_steps > 0 and (self.method == "dreambooth" or self.lora_text_encoder)
