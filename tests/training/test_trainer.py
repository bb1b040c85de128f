"""The training loss equals the DreamBooth objective written out by hand.

For a fixed batch of instance and class images: noisy latents
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, the target eps (epsilon models) or
v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (v-prediction models), each example's
mean squared error, optionally weighted by min(SNR, gamma) / SNR (epsilon) or
min(SNR, gamma) / (SNR + 1) (v), with SNR = abar_t / (1 - abar_t); the loss is the
instance mean plus prior weight x the class mean.
"""

import os
from pathlib import Path

import pytest
import torch

from dreambooth_core.config import TrainingSettings
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.training.data.batches import draw_micro_batch
from dreambooth_core.families import load_model_parts
from dreambooth_core.training.trainer import Example, Trainer

PRIOR_WEIGHT = 0.7


def images(count: int, offset: int) -> list[torch.Tensor]:
    return [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(offset + i)) * 2 - 1
            for i in range(count)]


def by_hand(trainer: Trainer, step: int, gamma: float, prediction_type: str, floor: float | None = None) -> float:
    """`floor`: --masked-loss, each instance's squared error weighted per latent pixel by
    floor + (1 - floor) x its mask averaged over the f x f image pixels of that latent pixel."""
    parts, o = trainer.parts, trainer.settings
    draw = draw_micro_batch(o.seed, step, 0, o.batch_size, 1, trainer.groups, trainer.class_groups, o.flip)
    chosen = [trainer.examples[i] for i in draw.instances] + [trainer.class_examples[i] for i in draw.classes]
    g = draw.generator
    with torch.no_grad():
        posterior = [parts.vae.encode(e.pixels).latent_dist for e in chosen]
        mean = torch.cat([p.mean for p in posterior])
        std = torch.cat([p.std for p in posterior])
        x0 = (mean + std * torch.randn(mean.shape, generator=g)) * parts.vae.config.scaling_factor
        eps = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (x0.shape[0],), generator=g)
        abar = parts.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        target = abar.sqrt() * eps - (1 - abar).sqrt() * x0 if prediction_type == "v_prediction" else eps
        ids = parts.tokenizer([e.caption for e in chosen], padding="max_length",
                              max_length=parts.tokenizer.model_max_length, truncation=True,
                              return_tensors="pt").input_ids
        prediction = parts.denoiser(xt, t, parts.text_encoder(ids)[0]).sample
    errors = [((prediction[i] - target[i]) ** 2).mean().item() for i in range(len(chosen))]
    if floor is not None:
        for i, example in enumerate(chosen[:len(draw.instances)]):
            mask, channels, height, width = example.mask[0, 0], *prediction.shape[1:]
            f = mask.shape[0] // height  # image pixels per latent pixel (4 in the tiny model)
            averaged = mask.reshape(height, f, width, f).mean(dim=(1, 3))
            weight = floor + (1 - floor) * averaged  # [h, w], the same for every latent channel
            errors[i] = ((prediction[i] - target[i]) ** 2 * weight).sum().item() / (weight.sum().item() * channels)
    if gamma:
        snr = [(a / (1 - a)).item() for a in abar.flatten()]
        denominators = [s + 1 if prediction_type == "v_prediction" else s for s in snr]
        errors = [e * min(s, gamma) / d for e, s, d in zip(errors, snr, denominators)]
    instances = len(draw.instances)
    instance_mean = sum(errors[:instances]) / instances
    class_mean = sum(errors[instances:]) / (len(errors) - instances)
    return instance_mean + PRIOR_WEIGHT * class_mean


@pytest.mark.parametrize("model", ["tiny", "tiny-sd2-v"])
@pytest.mark.parametrize("gamma", [0.0, 5.0])
def test_loss_matches_the_written_out_objective(model, gamma):
    path = fetch_model(model, Path(os.environ["DREAMBOOTH_CACHE"])).path
    parts = load_model_parts(path, torch.device("cpu"))
    prediction_type = parts.noise_scheduler.config.prediction_type
    assert prediction_type == ("v_prediction" if model.endswith("-v") else "epsilon")
    size = parts.denoiser.config.sample_size * 8
    instances = [Example(p[..., :size, :size], "photo of shrk man", "shrk") for p in images(3, 0)]
    classes = [Example(p[..., :size, :size], "photo of man", "shrk") for p in images(4, 10)]
    settings = TrainingSettings(seed=5, batch_size=2, min_snr_gamma=gamma, prior_loss_weight=PRIOR_WEIGHT,
                                text_encoder_steps=0)
    trainer = Trainer(parts, instances, settings, total_steps=1, class_examples=classes)
    for step in (0, 7):
        expected = by_hand(trainer, step, gamma, prediction_type)
        with torch.no_grad():
            actual = trainer.loss(step).item()
        assert actual == pytest.approx(expected, rel=1e-5), f"step {step}"


def test_the_masked_loss_is_the_written_out_weighted_mean():
    """--masked-loss: the subject (a disc, or the left half) weighs 1, the background the floor; class
    images are not masked. No flip here: the mask's mirror is the image's (trainer.mask_weights)."""
    path = fetch_model("tiny", Path(os.environ["DREAMBOOTH_CACHE"])).path
    parts = load_model_parts(path, torch.device("cpu"))
    rows, columns = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    disc = (((rows - 24) ** 2 + (columns - 40) ** 2) < 300).float()[None, None]
    left = (columns < 29).float()[None, None]
    masks = [disc, left, disc * 0.5]
    instances = [Example(p, "photo of shrk man", "shrk", mask=m) for p, m in zip(images(3, 0), masks)]
    classes = [Example(p, "photo of man", "shrk") for p in images(4, 10)]
    settings = TrainingSettings(seed=5, batch_size=2, prior_loss_weight=PRIOR_WEIGHT, text_encoder_steps=0,
                                masked_loss=True, mask_floor=0.2)
    trainer = Trainer(parts, instances, settings, total_steps=1, class_examples=classes)
    plain = Trainer(parts, instances, settings.model_copy(update={"masked_loss": False}), total_steps=1,
                    class_examples=classes)
    for step in (0, 7):
        expected = by_hand(trainer, step, 0.0, "epsilon", floor=0.2)
        with torch.no_grad():
            actual, unmasked = trainer.loss(step).item(), plain.loss(step).item()
        assert actual == pytest.approx(expected, rel=1e-5), f"step {step}"
        assert unmasked == pytest.approx(by_hand(plain, step, 0.0, "epsilon"), rel=1e-5)
        assert abs(actual - unmasked) > 1e-4 * unmasked  # the masks changed the loss
