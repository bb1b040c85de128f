"""What each method trains: the whole UNet (DreamBooth), LoRA adapters, or new token embeddings.

`Trainables` names every tensor the method changes, so checkpoints and exports
hold exactly those, under stable names ("unet.<param>" or "transformer.<param>", as the family
names its denoiser; "text_encoder.<param>",
"embeddings").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dreambooth_core.config import RuntimeSettings, TrainingSettings
from dreambooth_core.errors import ConfigError
from dreambooth_core.families.family import Family, ModelParts


@dataclass
class Trainables:
    denoiser: dict[str, torch.nn.Parameter] = field(default_factory=dict)
    text_encoder: dict[str, torch.nn.Parameter] = field(default_factory=dict)
    embeddings: torch.nn.Parameter | None = None
    new_tokens: list[str] = field(default_factory=list)
    text_encoder_2: dict[str, torch.nn.Parameter] = field(default_factory=dict)  # a second encoder's
    embeddings_2: torch.nn.Parameter | None = None  # SDXL: the new tokens' rows in the second encoder
    denoiser_name: str = "unet"  # the family's name for its denoiser: the prefix of its weights' names

    @property
    def text_side(self) -> dict[str, torch.nn.Parameter]:
        """The text encoders' trained parameters (both of SDXL's), by their names in named()."""
        return {f"text_encoder.{n}": p for n, p in self.text_encoder.items()} | {
            f"text_encoder_2.{n}": p for n, p in self.text_encoder_2.items()}

    def named(self) -> dict[str, torch.nn.Parameter]:
        named = {f"{self.denoiser_name}.{n}": p for n, p in self.denoiser.items()}
        named |= self.text_side
        if self.embeddings is not None:
            named["embeddings"] = self.embeddings
        if self.embeddings_2 is not None:
            named["embeddings_2"] = self.embeddings_2
        return named

    @property
    def new_vectors(self) -> list[torch.nn.Parameter]:
        """Textual inversion's trained rows, one parameter per text encoder."""
        return [e for e in (self.embeddings, self.embeddings_2) if e is not None]

    def token_vectors(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Textual inversion: each new token's learned embedding, shape (1, width), on the CPU."""
        return self._rows(self.embeddings, dtype)

    def token_vectors_2(self, dtype: torch.dtype) -> dict[str, torch.Tensor] | None:
        """The same in SDXL's second text encoder; None for a model with one."""
        return None if self.embeddings_2 is None else self._rows(self.embeddings_2, dtype)

    def _rows(self, vectors: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {token: vectors[i:i + 1].detach().to("cpu", dtype) for i, token in enumerate(self.new_tokens)}


class NewTokenEmbedding(torch.nn.Module):
    """The text encoder's token embedding, with trainable rows for tokens added after it."""

    def __init__(self, base: torch.nn.Embedding, vectors: torch.nn.Parameter):
        super().__init__()
        self.base, self.vectors, self.first_new = base, vectors, base.num_embeddings

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        known = self.base(ids.clamp(max=self.first_new - 1))
        new = ids >= self.first_new
        rows = self.vectors[(ids - self.first_new).clamp(min=0)]
        dtype = torch.promote_types(known.dtype, rows.dtype)  # a base held in half: the rows stay fp32
        return torch.where(new.unsqueeze(-1), rows.to(dtype), known.to(dtype))


def text_side_trains(settings: TrainingSettings, family: Family) -> bool:
    """Whether any step trains in the text encoders: textual inversion's new vectors, or a
    text-encoder phase on an encoder the family lets train (FLUX.2 [klein]'s never does)."""
    return settings.method == "textual-inversion" or (
        settings.trains_text_encoder and family.trainable_text_encoders > 0)


def frozen_text_encoder_note(settings: TrainingSettings, family: Family) -> str | None:
    """What a user who asked for a text-encoder phase should know when the family trains fewer of
    its text encoders than it has (None when nothing is held back)."""
    if not settings.trains_text_encoder or family.trainable_text_encoders >= 2:
        return None
    if family.trainable_text_encoders == 0:
        return (f"{family.title} trains no text encoder: its text encoder stays frozen, and "
                f"--text-encoder-steps {settings.text_encoder_steps} has no effect")
    return (f"{family.title} trains only its first text encoder for {settings.text_encoder_phase} steps; "
            "the second stays frozen")


def text_encoders_stay_on_device(settings: TrainingSettings, family: Family,
                                 runtime: RuntimeSettings | None = None) -> bool:
    """Whether the text encoders are on the training device during the denoiser's steps (at the
    peak: in the text-encoder phase, when there is one). When not, every caption is encoded once
    before training (text_embeddings.py) and the encoders wait in host memory; they come back to
    the device only to render samples and evaluations. Without the cache of text embeddings
    (--no-cache-text-embeddings) they encode at every step, so they stay."""
    cached = runtime is None or runtime.cache_text_embeddings
    return not cached or text_side_trains(settings, family)


def adapted_encoders(parts: ModelParts, trainables: Trainables) -> list:
    """LoRA: each text encoder, where it carries adapters (None for one that does not)."""
    trained = (trainables.text_encoder, trainables.text_encoder_2)
    return [encoder if weights else None for encoder, weights in zip(parts.text_encoders, trained)]


def set_up_method(parts: ModelParts, settings: TrainingSettings, tokens: list[str],
                  initializer_word: str = "person") -> Trainables:
    """`initializer_word`: where textual inversion's new embeddings start."""
    parts.denoiser.requires_grad_(False)
    for encoder in parts.text_encoders:
        encoder.requires_grad_(False)
    if settings.method == "dreambooth":
        trainables = _full(parts, settings)
    elif settings.method == "lora":
        trainables = _lora(parts, settings)
    else:
        trainables = _textual_inversion(parts, tokens, initializer_word)
    trainables.denoiser_name = parts.family.denoiser
    return trainables


def _full(parts: ModelParts, settings: TrainingSettings) -> Trainables:
    parts.denoiser.requires_grad_(True)
    trainables = Trainables(denoiser=dict(parts.denoiser.named_parameters()))
    if settings.trains_text_encoder:
        _train_text_encoders(trainables, [dict(e.named_parameters()) for e in trained_text_encoders(parts)])
    return trainables


def trained_text_encoders(parts: ModelParts) -> list[torch.nn.Module]:
    """The text encoders the text-encoder phase trains: those of them the family lets train."""
    return parts.text_encoders[:parts.family.trainable_text_encoders]


def _train_text_encoders(trainables: Trainables, weights: list[dict[str, torch.nn.Parameter]]) -> None:
    if weights:
        trainables.text_encoder = weights[0]
    if len(weights) > 1:
        trainables.text_encoder_2 = weights[1]


def _lora(parts: ModelParts, settings: TrainingSettings) -> Trainables:
    from peft import inject_adapter_in_model

    # Adapter initialisation draws from torch's global generator: pin it to the seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        parts.denoiser.add_adapter(_lora_config(settings, parts.family.lora_targets))
        if settings.trains_text_encoder:
            # transformers' own add_adapter wants a newer peft than the registry has.
            for encoder in trained_text_encoders(parts):
                inject_adapter_in_model(_lora_config(settings, parts.family.text_lora_targets), encoder)
    trainables = Trainables(denoiser=_lora_parameters(parts.denoiser))
    if settings.trains_text_encoder:
        _train_text_encoders(trainables, [_lora_parameters(e) for e in trained_text_encoders(parts)])
    return trainables


def _lora_config(settings: TrainingSettings, targets: tuple[str, ...] | str):
    """`targets`: module-name endings, or one regular expression that names must match whole (peft)."""
    from peft import LoraConfig

    return LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_scale_alpha,
                      init_lora_weights="gaussian",
                      target_modules=targets if isinstance(targets, str) else list(targets))


def _lora_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    named = {n: p for n, p in module.named_parameters() if "lora_" in n}
    for parameter in named.values():
        if parameter.dtype != torch.float32:  # peft made it in the dtype a quantised base computes in
            parameter.data = parameter.data.float()
        parameter.requires_grad_(True)
    return named


def _textual_inversion(parts: ModelParts, tokens: list[str], initializer_word: str) -> Trainables:
    """One new vector per token in each text encoder (a family with two: both)."""
    if parts.family.textual_inversion:
        raise ConfigError(parts.family.textual_inversion)
    vectors = [_new_token_rows(tokenizer, encoder, tokens, initializer_word)
               for tokenizer, encoder in zip(parts.tokenizers, parts.text_encoders)]
    return Trainables(embeddings=vectors[0], embeddings_2=vectors[1] if len(vectors) > 1 else None,
                      new_tokens=list(tokens))


def _new_token_rows(tokenizer, encoder: torch.nn.Module, tokens: list[str],
                    initializer_word: str) -> torch.nn.Parameter:
    if tokenizer.add_tokens(tokens) != len(tokens):
        raise ConfigError(f"a token among {tokens} already is a single token of the model's "
                          "vocabulary; textual inversion needs new words. Pick another --token.")
    embedding = encoder.get_input_embeddings()
    init_ids = tokenizer(initializer_word, add_special_tokens=False).input_ids
    with torch.no_grad():
        start = embedding.weight[init_ids].mean(dim=0).float()
    vectors = torch.nn.Parameter(start.repeat(len(tokens), 1))
    encoder.set_input_embeddings(NewTokenEmbedding(embedding, vectors))
    return vectors
