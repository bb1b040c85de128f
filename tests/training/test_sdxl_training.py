"""SDXL at the trainer level: the loss written out with both text encoders, the pooled embedding
and the micro-conditioning time ids; each method trains both encoders' side; resume is exact."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from dreambooth_core.config import TrainingSettings
from dreambooth_core.families.sd_tiny import build_tiny_sdxl_model
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.training.data.batches import draw_micro_batch
from dreambooth_core.families import load_model_parts
from dreambooth_core.training.trainer import Example, Trainer

CAPTION = "photo of shrk man"
# A 100 x 80 (height x width) photo whose square crop is rows 10-90 of its full width.
ORIGINAL, CROP = (100, 80), (0, 10, 80, 90)
# SDXL's six time ids, by hand: the original size; the crop's corner in the photo resized so the
# crop is 64 px wide (x 64/80: top 10 -> 8, left 0); the target size.
TIME_IDS = [100.0, 80.0, 8.0, 0.0, 64.0, 64.0]


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory) -> Path:
    return build_tiny_sdxl_model(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="module")
def sdxl_v(sdxl, tmp_path_factory) -> Path:
    folder = shutil.copytree(sdxl, tmp_path_factory.mktemp("tiny-sdxl-v") / "m")
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "prediction_type": "v_prediction"}))
    return folder


def photo(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def make_trainer(path: Path, steps: int = 4, **options) -> Trainer:
    settings = TrainingSettings(seed=5, learning_rate=1e-3, **{"text_encoder_steps": 0, **options})
    examples = [Example(photo(i), CAPTION, "shrk", ORIGINAL, CROP) for i in range(2)]
    return Trainer(load_model_parts(str(path), torch.device("cpu")), examples, settings, total_steps=steps)


@pytest.mark.slow  # two tiny SDXLs built and loaded
@pytest.mark.parametrize("model", ["sdxl", "sdxl_v"])
def test_the_loss_is_the_written_out_sdxl_objective(model, request):
    path = request.getfixturevalue(model)
    trainer = make_trainer(path)
    parts = trainer.parts
    with torch.no_grad():
        loss = trainer.loss(step=1)

        # The same draws as the trainer: which photo, then latent sample, noise and timestep.
        draw = draw_micro_batch(5, 1, 0, 1, 1, trainer.groups, [], False)
        pixels = trainer.examples[draw.instances[0]].pixels
        posterior = parts.vae.encode(pixels).latent_dist
        g = draw.generator
        latents = (posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g)) * 0.13025
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, 1000, (1,), generator=g)
        alpha_bar = parts.noise_scheduler.alphas_cumprod[t].reshape(1, 1, 1, 1)
        noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise
        target = noise if model == "sdxl" else alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents

        def ids(tokenizer):
            return tokenizer(CAPTION, padding="max_length", max_length=77, return_tensors="pt").input_ids

        first = parts.text_encoder(ids(parts.tokenizer), output_hidden_states=True)
        second = parts.text_encoder_2(ids(parts.tokenizer_2), output_hidden_states=True)
        hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)  # penultimate layers
        conditioning = {"text_embeds": second.text_embeds, "time_ids": torch.tensor([TIME_IDS])}
        prediction = parts.denoiser(noisy, t, hidden, added_cond_kwargs=conditioning).sample
        expected = (prediction - target).pow(2).mean()
    assert hidden.shape[-1] == parts.denoiser.config.cross_attention_dim
    assert torch.allclose(loss, expected, atol=1e-6), (loss, expected)


def test_a_mirrored_photo_has_its_crop_mirrored():
    from dreambooth_core.families.sd_conditioning import sdxl_time_ids

    assert sdxl_time_ids((100, 80), (10, 20, 70, 80), 64, flip=False) == (100.0, 80.0, 21, 11, 64.0, 64.0)
    # mirrored, the crop's left edge is 80 - 70 = 10 px from the left
    assert sdxl_time_ids((100, 80), (10, 20, 70, 80), 64, flip=True) == (100.0, 80.0, 21, 11, 64.0, 64.0)
    assert sdxl_time_ids((100, 80), (0, 20, 60, 80), 64, flip=True)[3] == round(20 * 64 / 60)


def test_a_buckets_image_gives_its_own_target_size():
    """A 3000x4000 portrait cropped to 2912x4000 at the top and resized to the 832x1216 bucket (width,
    height): target (1216, 832) as (height, width), the crop's corner in the photo resized to 832 wide."""
    from dreambooth_core.families.family import ImageGeometry
    from dreambooth_core.families.sd_conditioning import time_ids

    image = ImageGeometry(1216, 832, original_size=(4000, 3000), crop_box=(44, 0, 2956, 4000))
    row = time_ids([image], torch.device("cpu"))[0].tolist()
    assert row == [4000.0, 3000.0, 0.0, round(44 * 832 / 2912), 1216.0, 832.0]


def trained(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in t.trainables.named().items()}


# What each method trains on SDXL, by the prefix of its names in Trainables.named().
TRAINED = {"dreambooth": ("unet.", "text_encoder.", "text_encoder_2."),
           "lora": ("unet.", "text_encoder.", "text_encoder_2."),
           "textual-inversion": ("embeddings", "embeddings_2")}


@pytest.mark.slow  # three trainers of four steps
@pytest.mark.parametrize("method, precision", [(m, "no") for m in TRAINED] + [("lora", "bf16")])
def test_each_method_trains_both_encoders_and_resume_is_exact(sdxl, method, precision, tmp_path):
    """bf16: LoRA holds the frozen model in bf16 (training/memory/frozen_weights.py)."""
    options = dict(method=method, text_encoder_steps=3, flip=True, lora_text_encoder=method == "lora",
                   mixed_precision=precision)
    base = trained(make_trainer(sdxl, **options))
    straight = make_trainer(sdxl, **options)
    for step in range(4):
        straight.step(step)
    first = make_trainer(sdxl, **options)
    for step in range(2):
        first.step(step)
    store = CheckpointStore(Session(str(tmp_path), "s"))
    store.save(2, first.state_writers(), meta={})
    resumed = make_trainer(sdxl, **options)
    resumed.load_state(store.load_latest())
    for step in range(2, 4):
        resumed.step(step)

    expected, actual = trained(straight), trained(resumed)
    assert {k.split(".")[0] + ("." if "." in k else "") for k in expected} == set(TRAINED[method])
    for prefix in TRAINED[method]:
        names = [k for k in expected if k.startswith(prefix)]
        assert names and any(not torch.equal(expected[k], base[k]) for k in names), f"{prefix} did not train"
    assert [k for k in expected if not torch.equal(expected[k], actual[k])] == []


def test_textual_inversion_adds_the_token_to_both_tokenizers_with_one_vector_per_encoder(sdxl):
    trainer = make_trainer(sdxl, method="textual-inversion")
    parts, trainables = trainer.parts, trainer.trainables
    for tokenizer in (parts.tokenizer, parts.tokenizer_2):
        assert len(tokenizer("shrk", add_special_tokens=False).input_ids) == 1
    widths = [e.get_input_embeddings().base.embedding_dim for e in parts.text_encoders]
    assert widths[0] != widths[1]  # the tiny SDXL's encoders differ in width, as SDXL's do
    assert [tuple(v.shape) for v in trainables.new_vectors] == [(1, widths[0]), (1, widths[1])]
