"""Resume at the trainer level, without Prefect: every method and option that keeps state.

On the CPU here; on CUDA where there is one (the gpu marker)."""

import os
from pathlib import Path

import pytest
import torch

from dreambooth_core.config import RuntimeSettings, TrainingSettings
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.families import load_model_parts
from dreambooth_core.families.quantised import BasePrecision
from dreambooth_core.training.devices import resolve_precision
from dreambooth_core.training.trainer import Example, Trainer

CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])
STEPS, KILLED_AT = 6, 3

CASES = {
    "dreambooth": dict(learning_rate=1e-4),
    # the text-encoder phase ends at step 2, inside the part trained before the save
    "text-encoder phase": dict(learning_rate=1e-4, text_encoder_steps=2),
    # ...and at step 5, after it
    "phase ends after resume": dict(learning_rate=1e-4, text_encoder_steps=5),
    "prior, flip, min-snr, offset noise, batch 2, accumulation 2, cosine": dict(
        learning_rate=1e-4, flip=True, min_snr_gamma=5.0, offset_noise=0.1, batch_size=2,
        gradient_accumulation=2, lr_schedule="cosine", warmup_steps=2),
    "fp16 with grad scaler": dict(learning_rate=1e-4, mixed_precision="fp16", text_encoder_steps=4),
    "bf16": dict(learning_rate=1e-4, mixed_precision="bf16"),
    "ema": dict(learning_rate=1e-4, ema_decay=0.9),
    "gradient checkpointing": dict(learning_rate=1e-4, runtime=RuntimeSettings(gradient_checkpointing=True),
                                   text_encoder_steps=4),
    "lora": dict(method="lora", learning_rate=1e-3, lora_rank=4, lora_text_encoder=True, text_encoder_steps=4),
    "textual inversion": dict(method="textual-inversion", learning_rate=1e-2),
    # QLoRA: the adapters on an int8 base (torchao), UNet and text encoder; textual inversion beside it
    "lora on an int8 base": dict(method="lora", base_precision="int8", learning_rate=1e-3, lora_rank=4,
                                 lora_text_encoder=True, text_encoder_steps=4),
    "lora on an fp8 base, bf16": dict(method="lora", base_precision="fp8", mixed_precision="bf16",
                                      learning_rate=1e-3, lora_rank=4),
    "textual inversion on an int8 base": dict(method="textual-inversion", base_precision="int8",
                                              learning_rate=1e-2),
    # one optimizer per weight, stepped during backward; with checkpointing's recomputation too
    "step in backward": dict(learning_rate=1e-4, step_in_backward=True, text_encoder_steps=2, ema_decay=0.9),
    "step in backward, checkpointing, bf16": dict(learning_rate=1e-4, step_in_backward=True, mixed_precision="bf16",
                                                  runtime=RuntimeSettings(gradient_checkpointing=True)),
}
SLOW_ON_CPU = {"fp16 with grad scaler"}  # CPU fp16 autocast: about 9 s


def examples(prior: bool) -> tuple[list[Example], list[Example]]:
    pixels = [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(4)]
    instances = [Example(p, "photo of shrk man", "shrk") for p in pixels[:3]]
    classes = [Example(p, "photo of man", "shrk") for p in pixels[2:]] if prior else []
    return instances, classes


def trainer(model_path: str, device: str, case: dict) -> Trainer:
    """`case`: training settings (the text encoder trains only when it says so) and a runtime."""
    runtime = case.get("runtime", RuntimeSettings())
    settings = TrainingSettings(seed=3, **{"text_encoder_steps": 0, **{k: v for k, v in case.items() if k != "runtime"}})
    instances, classes = examples(prior=settings.batch_size > 1)
    base = BasePrecision(settings.base_precision, resolve_precision(settings.mixed_precision, torch.device(device)))
    parts = load_model_parts(model_path, torch.device(device), base=base)
    return Trainer(parts, instances, settings, total_steps=STEPS,
                   runtime=runtime, class_examples=classes)


def trained_values(t: Trainer) -> dict[str, torch.Tensor]:
    values = {k: v.detach().cpu().clone() for k, v in t.trainables.named().items()}
    values |= {f"ema.{k}": v.cpu() for k, v in (t.ema or {}).items()}
    return values


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_ON_CPU else c for c in CASES])
def test_save_load_and_continue_equals_training_straight_through(tiny_model_path, tmp_path, device, case):
    options = CASES[case]
    straight = trainer(tiny_model_path, device, options)
    for step in range(STEPS):
        straight.step(step)

    first = trainer(tiny_model_path, device, options)
    for step in range(KILLED_AT):
        first.step(step)
    store = CheckpointStore(Session(str(tmp_path), "s"))
    store.save(KILLED_AT, first.state_writers(), meta={})
    del first
    resumed = trainer(tiny_model_path, device, options)
    resumed.load_state(store.load_latest())
    for step in range(KILLED_AT, STEPS):
        resumed.step(step)

    expected, actual = trained_values(straight), trained_values(resumed)
    base = trained_values(trainer(tiny_model_path, device, options))
    assert expected.keys() == actual.keys()
    assert any(not torch.equal(expected[k], base[k]) for k in expected), "training changed nothing"
    different = [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert not different, f"{len(different)} tensors differ after resume, e.g. {different[:3]}"


def bucketed_examples() -> tuple[list[Example], list[Example]]:
    """Photos in three aspect-ratio buckets of 64 px's area (48x80, 64x64, 80x48), with SDXL's crop
    facts, and class images in each bucket."""
    def image(width, height, seed):
        return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    sizes = [(48, 80), (48, 80), (64, 64), (80, 48), (80, 48)]
    instances = [Example(image(w, h, i), "photo of shrk man", "shrk", original_size=(h * 5, w * 5 + 20),
                         crop_box=(10 * (i % 2), 0, w * 5 + 10 * (i % 2), h * 5)) for i, (w, h) in enumerate(sizes)]
    classes = [Example(image(w, h, 10 + i), "photo of man", "shrk") for i, (w, h) in enumerate(sorted(set(sizes)) * 2)]
    return instances, classes


@pytest.mark.slow  # two trainers of a tiny SDXL / FLUX model each: the full suite only
@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-flux"])
def test_buckets_resume_to_the_bits_of_training_straight_through(tmp_path, model):
    """Batches of 2 from one bucket each, prior preservation from the same bucket, flips: a new trainer
    that loads what one training straight through saved at step 3 ends where that one does."""
    from dreambooth_core.families.base_model import fetch_model

    path = fetch_model(model, Path(os.environ["DREAMBOOTH_CACHE"])).path
    settings = TrainingSettings(seed=3, learning_rate=1e-3, method="lora", lora_rank=4, batch_size=2, flip=True,
                                text_encoder_steps=0)

    def bucketed() -> Trainer:
        instances, classes = bucketed_examples()
        return Trainer(load_model_parts(path, torch.device("cpu")), instances, settings, total_steps=STEPS,
                       class_examples=classes)

    straight = bucketed()
    assert len(set(straight.buckets)) == 3
    store = CheckpointStore(Session(str(tmp_path), "s"))
    for step in range(STEPS):
        if step == KILLED_AT:  # a host copy, as a run commits it while training goes on
            store.save(KILLED_AT, straight.state_writers(), meta={})
            saved = trained_values(straight)
        straight.step(step)
    resumed = bucketed()
    resumed.load_state(store.load_latest())
    for step in range(KILLED_AT, STEPS):
        resumed.step(step)
    expected, actual = trained_values(straight), trained_values(resumed)
    assert any(not torch.equal(v, saved[k]) for k, v in expected.items()), "the steps after the save changed nothing"
    different = [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert not different, f"{len(different)} tensors differ after resume, e.g. {different[:3]}"
