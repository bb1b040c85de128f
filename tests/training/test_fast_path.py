"""The fast path changes speed, not results: caches give the losses and weights of no caches."""

import torch

from dreambooth_core.config import RuntimeSettings, TrainingSettings
from dreambooth_core.families import load_model_parts
from dreambooth_core.training.trainer import Example, Trainer


def run(model_path: str, **fast) -> tuple[list[float], dict[str, torch.Tensor]]:
    pixels = [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(3)]
    instances = [Example(p, "photo of shrk man", "shrk") for p in pixels]
    classes = [Example(-p, "photo of man", "shrk") for p in pixels]
    # The text encoder trains for 2 steps, then its embeddings may be cached.
    settings = TrainingSettings(seed=1, learning_rate=1e-4, text_encoder_steps=2, flip=True)
    trainer = Trainer(load_model_parts(model_path, torch.device("cpu")), instances, settings, total_steps=1,
                      runtime=RuntimeSettings(**fast), class_examples=classes)
    losses = [trainer.step(step).item() for step in range(5)]
    return losses, {k: v.detach().clone() for k, v in trainer.trainables.named().items()}


def test_cached_latents_and_embeddings_train_exactly_like_uncached(tiny_model_path):
    cached_losses, cached = run(tiny_model_path, cache_latents=True, cache_text_embeddings=True)
    plain_losses, plain = run(tiny_model_path, cache_latents=False, cache_text_embeddings=False)
    assert cached_losses == plain_losses
    assert all(torch.equal(cached[k], plain[k]) for k in cached)


def test_latents_are_encoded_once_per_image_and_flip(tiny_model_path):
    parts = load_model_parts(tiny_model_path, torch.device("cpu"))
    calls = []
    encode = parts.vae.encode
    parts.vae.encode = lambda x: calls.append(1) or encode(x)
    pixels = [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    trainer = Trainer(parts, [Example(p, "photo of shrk", "shrk") for p in pixels],
                      TrainingSettings(seed=0, flip=True, text_encoder_steps=0), total_steps=1)
    for step in range(12):
        trainer.step(step)
    assert 0 < len(calls) <= 4  # 2 images x (plain, mirrored)
