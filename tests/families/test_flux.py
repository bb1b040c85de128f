"""FLUX.1's training loss equals the flow-matching objective written out by hand.

For a fixed batch of instance and class images: clean latents x0 = (z - shift) x scale from a
sample z of the VAE posterior; a noise level sigma = sigmoid(n), n standard normal, shifted by
the image's token count as FLUX.1 [dev]'s scheduler shifts it (mu from 0.5 at 256 tokens to 1.15
at 4096, sigma' = e^mu / (e^mu + 1/sigma - 1)); noisy latents (1 - sigma) x0 + sigma eps; the
transformer reads 2x2 patches as tokens (each token's features: channel-major, then row, then
column of its patch), positions (0, row, column), T5's token embeddings, CLIP's pooled embedding
and guidance 1; the target is eps - x0; the loss is the instance mean plus prior weight x the
class mean of each example's mean squared error.
"""

import math
import os
from pathlib import Path

import pytest
import torch

from dreambooth_core.config import TrainingSettings
from dreambooth_core.families import load_model_parts
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.training.data.batches import draw_micro_batch
from dreambooth_core.training.trainer import Example, Trainer

PRIOR_WEIGHT = 0.7


def images(count: int, offset: int) -> list[torch.Tensor]:
    return [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(offset + i)) * 2 - 1
            for i in range(count)]


def patches_as_tokens(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    tokens = torch.empty(b, (h // 2) * (w // 2), c * 4)
    for row in range(h // 2):
        for column in range(w // 2):
            for channel in range(c):
                for dy in range(2):
                    for dx in range(2):
                        tokens[:, row * (w // 2) + column, channel * 4 + dy * 2 + dx] = \
                            x[:, channel, 2 * row + dy, 2 * column + dx]
    return tokens


def by_hand(trainer: Trainer, step: int) -> float:
    parts, o = trainer.parts, trainer.settings
    draw = draw_micro_batch(o.seed, step, 0, o.batch_size, 1, trainer.groups, trainer.class_groups, o.flip)
    chosen = [trainer.examples[i] for i in draw.instances] + [trainer.class_examples[i] for i in draw.classes]
    g, vae = draw.generator, parts.vae.config
    with torch.no_grad():
        posterior = [parts.vae.encode(e.pixels).latent_dist for e in chosen]
        mean, std = torch.cat([p.mean for p in posterior]), torch.cat([p.std for p in posterior])
        x0 = (mean + std * torch.randn(mean.shape, generator=g) - vae.shift_factor) * vae.scaling_factor
        eps = torch.randn(x0.shape, generator=g)
        sigma = torch.sigmoid(torch.randn(x0.shape[0], generator=g))
        tokens = (x0.shape[2] // 2) * (x0.shape[3] // 2)
        mu = 0.5 + (1.15 - 0.5) * (tokens - 256) / (4096 - 256)
        sigma = math.exp(mu) / (math.exp(mu) + 1 / sigma - 1)
        s = sigma.view(-1, 1, 1, 1)
        xt = (1 - s) * x0 + s * eps
        positions = torch.tensor([[0.0, r, c] for r in range(x0.shape[2] // 2) for c in range(x0.shape[3] // 2)])
        captions = [e.caption for e in chosen]
        clip = parts.tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        t5 = parts.tokenizer_2(captions, padding="max_length", max_length=512, truncation=True, return_tensors="pt")
        hidden = parts.text_encoder_2(t5.input_ids)[0]
        out = parts.denoiser(hidden_states=patches_as_tokens(xt), timestep=sigma, guidance=torch.ones(len(chosen)),
                             pooled_projections=parts.text_encoder(clip.input_ids).pooler_output,
                             encoder_hidden_states=hidden, txt_ids=torch.zeros(hidden.shape[1], 3),
                             img_ids=positions).sample
        target = patches_as_tokens(eps - x0)
    errors = [((out[i] - target[i]) ** 2).mean().item() for i in range(len(chosen))]
    instances = len(draw.instances)
    return sum(errors[:instances]) / instances + PRIOR_WEIGHT * sum(errors[instances:]) / (len(errors) - instances)


@pytest.fixture(scope="module")
def tiny_flux() -> str:
    return fetch_model("tiny-flux", Path(os.environ["DREAMBOOTH_CACHE"])).path


def test_the_loss_is_the_written_out_flow_matching_objective(tiny_flux):
    parts = load_model_parts(tiny_flux, torch.device("cpu"))
    instances = [Example(p, "photo of shrk man", "shrk") for p in images(3, 0)]
    classes = [Example(p, "photo of man", "shrk") for p in images(4, 10)]
    settings = TrainingSettings(seed=5, batch_size=2, prior_loss_weight=PRIOR_WEIGHT, text_encoder_steps=0)
    trainer = Trainer(parts, instances, settings, total_steps=1, class_examples=classes)
    for step in (0, 7):
        expected = by_hand(trainer, step)
        with torch.no_grad():
            actual = trainer.loss(step).item()
        assert actual == pytest.approx(expected, rel=1e-5), f"step {step}"


def test_what_flux_cannot_train_is_refused_with_the_reason(tiny_flux):
    from dreambooth_core.errors import ConfigError
    from dreambooth_core.families import family_of_folder

    family = family_of_folder(tiny_flux)
    with pytest.raises(ConfigError, match="textual-inversion cannot train FLUX.1.*--method lora"):
        family.check_settings(TrainingSettings(method="textual-inversion"))
    with pytest.raises(ConfigError, match="--min-snr-gamma .* flow"):
        family.check_settings(TrainingSettings(min_snr_gamma=5))
    family.check_settings(TrainingSettings(method="lora"))
