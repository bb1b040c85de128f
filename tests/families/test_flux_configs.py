"""The FLUX.1 config folder builds the full published architecture (on the meta device: shapes
only) with tokenizers whose limits are the real ones."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import AutoConfig, AutoTokenizer, CLIPTextModel, T5EncoderModel

from dreambooth_core.errors import ModelError
from dreambooth_core.families.flux_configs import FLUX_MAX_SEQUENCE_LENGTH, write_flux_config_folder

# Parameter counts of the published FLUX.1 parts; [dev]'s guidance embedder is the only difference.
PARAMETERS = {"transformer": {"dev": 11_901_408_320, "schnell": 11_891_178_560}, "vae": 83_819_683,
              "text_encoder": 123_060_480, "text_encoder_2": 4_762_310_656}


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_config_folder_builds_the_published_architecture(variant, tmp_path):
    folder = write_flux_config_folder(variant, tmp_path / variant)
    with torch.device("meta"):
        transformer = FluxTransformer2DModel.from_config(
            FluxTransformer2DModel.load_config(folder, subfolder="transformer"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
        clip = CLIPTextModel(AutoConfig.from_pretrained(folder, subfolder="text_encoder"))
        t5 = T5EncoderModel(AutoConfig.from_pretrained(folder, subfolder="text_encoder_2"))
    assert _count(transformer) == PARAMETERS["transformer"][variant]
    assert (_count(vae), _count(clip), _count(t5)) == (PARAMETERS["vae"], PARAMETERS["text_encoder"],
                                                       PARAMETERS["text_encoder_2"])
    assert transformer.config.guidance_embeds == (variant == "dev")
    # The parts fit together as FluxPipeline connects them.
    assert transformer.config.in_channels == 4 * vae.config.latent_channels
    assert transformer.config.joint_attention_dim == t5.config.d_model
    assert transformer.config.pooled_projection_dim == clip.config.hidden_size
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 8


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_scheduler_and_tokenizers(variant, tmp_path):
    folder = write_flux_config_folder(variant, tmp_path / variant)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
    assert (scheduler.config.use_dynamic_shifting, scheduler.config.shift) == \
        ((True, 3.0) if variant == "dev" else (False, 1.0))
    clip = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
    t5 = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer_2")
    assert (clip.model_max_length, t5.model_max_length) == (77, 512)
    assert FLUX_MAX_SEQUENCE_LENGTH[variant] <= t5.model_max_length
    assert len(t5("a photo of a dog").input_ids) == 6  # five words and the end-of-text token
    index = FluxPipeline.load_config(folder)
    assert index["_class_name"] == "FluxPipeline"
    assert index["tokenizer_2"] == ["transformers", "T5TokenizerFast"]


def test_unknown_variant_is_refused(tmp_path):
    with pytest.raises(ModelError, match="Unknown FLUX.1 variant 'pro'"):
        write_flux_config_folder("pro", tmp_path)
