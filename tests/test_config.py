"""The configuration: sections, flat settings, what the training fingerprint covers."""

import pytest
from pydantic import ValidationError

from dreambooth_core.config import (
    RANK_DRAWS,
    SECTION_OF,
    SECTIONS,
    DreamBoothConfig,
    TrainingSettings,
    differing_fields,
)


def test_differing_fields_names_only_changes():
    assert differing_fields({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == ["b", "c"]


@pytest.mark.parametrize("bad", [{"session": "../x"}, {"session": "s", "resolution": 500},
                                 {"session": "s", "keep_checkpoints": 1}, {"session": "s", "surprise": 1}])
def test_invalid_values_are_refused(bad):
    with pytest.raises(ValidationError):
        DreamBoothConfig(**bad)


def test_flat_settings_land_in_their_sections_and_come_back_flat():
    flat = {"session": "s", "model": "tiny", "photos": "p", "token": "shrk", "steps": 8, "chunk_steps": 4,
            "sample_every": 0, "export_precision": "fp32", "bad_token": "warn"}
    config = DreamBoothConfig(**flat)
    assert (config.base_model.model, config.inputs.photos, config.captions.token, config.training.steps,
            config.runtime.chunk_steps, config.samples.sample_every, config.export.export_precision,
            config.checks.bad_token) == ("tiny", "p", "shrk", 8, 4, 0, "fp32", "warn")
    assert DreamBoothConfig(**config.flat()) == config
    assert DreamBoothConfig(**config.model_dump()) == config
    # A section given whole and a flat setting of the same section combine.
    assert DreamBoothConfig(session="s", training={"seed": 3}, steps=8).training == TrainingSettings(seed=3, steps=8)


def test_every_setting_has_one_section_and_a_description():
    names = [name for kind in SECTIONS.values() for name in kind.model_fields]
    assert len(names) == len(set(names)) == len(SECTION_OF)
    assert all(field.description for kind in SECTIONS.values() for field in kind.model_fields.values())


def test_the_fingerprint_is_the_training_sections_whole_except_steps():
    config = DreamBoothConfig(session="s", model="tiny", token="shrk", steps=8, chunk_steps=4, seed=2)
    values = config.training_values()
    assert set(values) == (set(config.base_model.model_dump()) | set(config.captions.model_dump())
                           | set(config.training.model_dump())) - {"steps", "vae", "step_in_backward",
                                                                         "base_precision", "buckets",
                                                                         "masked_loss", "mask_floor",
                                                                         "caption_mode", "captioner",
                                                                         "shard"}
    assert values["seed"] == 2 and values["model"] == "tiny" and values["token"] == "shrk"
    # --vae counts once given; unset it is left out, as sessions from before it recorded it.
    with_vae = DreamBoothConfig(**{**config.flat(), "vae": "owner/vae"})
    assert with_vae.training_values() == values | {"vae": "owner/vae"}
    in_backward = DreamBoothConfig(**{**config.flat(), "step_in_backward": True})  # likewise
    assert in_backward.training_values() == values | {"step_in_backward": True}
    quantised = DreamBoothConfig(**{**config.flat(), "base_precision": "nf4"})
    assert quantised.training_values() == values | {"base_precision": "nf4"}
    # Several processes: since they take their rows of one process's draws, not draws of their own.
    several = DreamBoothConfig(**{**config.flat(), "gpus": 2})
    assert several.training_values() == values | {"gpus": 2, "draws": RANK_DRAWS}
    bucketed = DreamBoothConfig(**{**config.flat(), "buckets": "off", "masked_loss": True, "mask_floor": 0.3})
    assert bucketed.training_values() == values | {"buckets": "off", "masked_loss": True, "mask_floor": 0.3}
    described = DreamBoothConfig(**{**config.flat(), "caption_mode": "auto", "captioner": "tiny"})
    assert described.training_values() == values | {"caption_mode": "auto", "captioner": "tiny"}
    # Settings that change speed, samples or outputs never change it.
    faster = DreamBoothConfig(**{**config.flat(), "chunk_steps": 2, "gradient_checkpointing": True,
                                 "sample_every": 0, "export_precision": "fp32", "device": "cpu", "steps": 16})
    assert faster.training_values() == values


def test_a_sharded_session_is_the_same_training_on_any_number_of_processes_with_the_same_whole_batch():
    def values(**settings): return DreamBoothConfig(session="s", shard=True, **settings).training_values()
    two = values(gpus=2, batch_size=2)
    assert two == values(gpus=4, batch_size=1) and two["whole_batch"] == 4
    assert differing_fields(two, values(gpus=4, batch_size=2)) == ["whole_batch"]
    assert "gpus" not in two and "batch_size" not in two


@pytest.mark.parametrize("settings, needs", [
    ({}, "--gpus 2 or more"), ({"gpus": 2, "method": "lora"}, "--method dreambooth"),
    ({"gpus": 2, "mixed_precision": "fp16"}, "--mixed-precision bf16 or no"),
    ({"gpus": 2, "optimizer": "adamw-8bit"}, "--optimizer adamw")])
def test_shard_is_refused_with_what_it_needs(settings, needs):
    with pytest.raises(ValidationError, match=f"--shard needs {needs}"):
        TrainingSettings(shard=True, **settings)
