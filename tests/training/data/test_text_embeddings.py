"""Frozen text conditioning: each caption encoded once, kept in the session, the encoders off the GPU.

Trainer-level, on the tiny models (CPU here; the placement on a GPU where there is one, and on
fake CUDA in tests/benchmarks/test_cuda_dry_run.py)."""

from pathlib import Path

import pytest
import torch

from dreambooth_core.config import RuntimeSettings, TrainingSettings
from dreambooth_core.families import FLUX, FLUX2_KLEIN, SDXL, STABLE_DIFFUSION, load_model_parts
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import TEXT_EMBEDDINGS
from dreambooth_core.training.methods import text_encoders_stay_on_device
from dreambooth_core.training.data.text_embeddings import EmbeddingStore
from dreambooth_core.training.trainer import Example, Trainer

CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])
STEPS, KILLED_AT = 4, 2
CASES = {
    "lora, frozen encoder": dict(method="lora", learning_rate=1e-3, lora_rank=4),
    # The phase ends at step 1, before the save: the stored embeddings are the trained encoder's.
    # Its resume runs in the full suite only (ten steps through the encoder's backward too).
    "lora, text-encoder phase": dict(method="lora", learning_rate=1e-3, lora_rank=4, lora_text_encoder=True,
                                     text_encoder_steps=1),
}


def examples() -> tuple[list[Example], list[Example]]:
    pixels = [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(4)]
    instances = [Example(p, f"photo of shrk man {i % 2}", "shrk") for i, p in enumerate(pixels[:3])]
    return instances, [Example(p, "photo of man", "shrk") for p in pixels[2:]]


def trainer(model_path: str, options: dict, store: EmbeddingStore | None, device: str = "cpu") -> Trainer:
    settings = TrainingSettings(seed=3, **{"text_encoder_steps": 0, **options})
    instances, classes = examples()
    return Trainer(load_model_parts(model_path, torch.device(device)), instances, settings, total_steps=STEPS,
                   class_examples=classes, embedding_store=store)


def counting_encoder_calls(t: Trainer) -> list[int]:
    calls = []
    for encoder in t.parts.text_encoders:
        encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls


def stored_files(session: Session) -> list[str]:
    return session.list(TEXT_EMBEDDINGS)


def trained(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in t.trainables.named().items()}


def test_whether_encoders_stay_on_the_device_follows_what_trains():
    lora = TrainingSettings(method="lora")
    assert not text_encoders_stay_on_device(lora, STABLE_DIFFUSION)
    assert text_encoders_stay_on_device(lora.model_copy(update={"lora_text_encoder": True}), STABLE_DIFFUSION)
    assert not text_encoders_stay_on_device(TrainingSettings(text_encoder_steps=0), STABLE_DIFFUSION)
    assert text_encoders_stay_on_device(TrainingSettings(), FLUX)  # DreamBooth's phase trains FLUX.1's CLIP-L
    assert not text_encoders_stay_on_device(TrainingSettings(), FLUX2_KLEIN)  # klein's encoder never trains
    assert text_encoders_stay_on_device(TrainingSettings(method="textual-inversion"), SDXL)  # new vectors
    no_cache = RuntimeSettings(cache_text_embeddings=False)
    assert text_encoders_stay_on_device(lora, STABLE_DIFFUSION, no_cache)  # they encode at every step


def test_each_caption_is_encoded_once_into_the_session_and_read_back_by_a_new_run(tiny_model_path, tmp_path):
    session = Session(str(tmp_path), "s")
    first = trainer(tiny_model_path, CASES["lora, frozen encoder"], EmbeddingStore(session, "run"))
    calls = counting_encoder_calls(first)
    for step in range(3):
        first.step(step)
    assert calls == []  # every caption was encoded while the trainer was set up
    captions = {e.caption for e in [*first.examples, *first.class_examples]}
    assert len(stored_files(session)) == len(captions) == 3  # two instance captions and the class prompt

    again = trainer(tiny_model_path, CASES["lora, frozen encoder"], EmbeddingStore(session, "run"))
    assert counting_encoder_calls(again) == [] and len(stored_files(session)) == 3
    for caption in captions:
        assert torch.equal(again._frozen_embeddings[caption].hidden, first._frozen_embeddings[caption].hidden)


def test_another_model_caption_or_trained_encoder_never_reads_a_stored_embedding(tiny_model_path, tmp_path):
    store = EmbeddingStore(Session(str(tmp_path), "s"), "fingerprint")
    cpu = torch.device("cpu")
    names = {store.file("photo of man", "", cpu), store.file("photo of men", "", cpu),
             store.file("photo of man", "trained-digest", cpu),
             EmbeddingStore(store.session, "other fingerprint").file("photo of man", "", cpu),
             store.file("photo of man", "", torch.device("cuda"))}
    assert len(names) == 5

    phase = CASES["lora, text-encoder phase"]
    straight = trainer(tiny_model_path, phase, store)
    for step in range(2):  # the phase ends at 1: the trained encoder's embeddings are stored
        straight.step(step)
    base = trainer(tiny_model_path, {**phase, "lora_text_encoder": False}, store)  # the model's own encoder
    assert len(stored_files(store.session)) == 6
    trained_encoder, own = (t._frozen_embeddings["photo of man"].hidden for t in (straight, base))
    assert not torch.equal(trained_encoder, own)


def test_a_damaged_stored_embedding_is_encoded_again_to_the_same_bits(tiny_model_path, tmp_path):
    session = Session(str(tmp_path), "s")
    first = trainer(tiny_model_path, CASES["lora, frozen encoder"], EmbeddingStore(session, "run"))
    name = stored_files(session)[0]
    Path(session.path(f"{TEXT_EMBEDDINGS}/{name}")).write_bytes(b"\0" * 10)
    again = trainer(tiny_model_path, CASES["lora, frozen encoder"], EmbeddingStore(session, "run"))
    for caption, value in first._frozen_embeddings.items():
        assert torch.equal(again._frozen_embeddings[caption].hidden, value.hidden)
    assert Path(session.path(f"{TEXT_EMBEDDINGS}/{name}")).stat().st_size > 10  # written again


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if "phase" in c else c
                                  for c in CASES])
def test_a_resumed_run_with_its_embeddings_kept_or_deleted_trains_to_the_same_weights(
        tiny_model_path, tmp_path, case):
    options = CASES[case]
    straight = trainer(tiny_model_path, options, None)
    for step in range(STEPS):
        straight.step(step)
    expected = trained(straight)

    session = Session(str(tmp_path), "s")
    first = trainer(tiny_model_path, options, EmbeddingStore(session, "run"))
    assert any(not torch.equal(v, expected[k]) for k, v in trained(first).items()), "training changed nothing"
    for step in range(KILLED_AT):
        first.step(step)
    store = CheckpointStore(session)
    store.save(KILLED_AT, first.state_writers(), meta={})
    del first
    kept = stored_files(session)
    assert len(kept) == 3
    for cache in ("kept", "deleted"):
        if cache == "deleted":
            session.remove(TEXT_EMBEDDINGS)
        resumed = trainer(tiny_model_path, options, EmbeddingStore(session, "run"))
        resumed.load_state(store.load_latest())
        for step in range(KILLED_AT, STEPS):
            resumed.step(step)
        actual = trained(resumed)
        different = [k for k in expected if not torch.equal(expected[k], actual[k])]
        assert not different, f"embeddings {cache}: {len(different)} tensors differ, e.g. {different[:3]}"
    assert stored_files(session) == kept  # encoded again to the same files


@pytest.mark.parametrize("device", [CUDA])
def test_text_encoders_wait_on_the_host_while_no_step_trains_them(tiny_model_path, tmp_path, device):
    def encoders_on(t: Trainer) -> set[str]:
        return {p.device.type for e in t.parts.text_encoders for p in e.parameters()}

    frozen = trainer(tiny_model_path, CASES["lora, frozen encoder"], None, device)
    assert encoders_on(frozen) == {"cpu"}  # from the setup on
    frozen.step(0)
    assert encoders_on(frozen) == {"cpu"} and next(frozen.parts.denoiser.parameters()).is_cuda
    with frozen.text_encoders_for_rendering():
        assert encoders_on(frozen) == {"cuda"}
    assert encoders_on(frozen) == {"cpu"}

    phase = trainer(tiny_model_path, CASES["lora, text-encoder phase"], None, device)
    phase.step(0)
    assert encoders_on(phase) == {"cuda"}  # they train
    phase.step(1)
    assert encoders_on(phase) == {"cpu"}  # the phase ended at step 1

    inversion = trainer(tiny_model_path, dict(method="textual-inversion", learning_rate=1e-2), None, device)
    inversion.step(0)
    assert encoders_on(inversion) == {"cuda"}  # its new vectors train inside the encoder
