"""SDXL textual-inversion export: the clip_l / clip_g file and the diffusers folder's two files
load with diffusers' load_textual_inversion into each encoder of a fresh SDXL pipeline, which
then holds the token with exactly the saved vectors."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file

from dreambooth_core.errors import ConfigError
from dreambooth_core.families.sd_embedding import DIFFUSERS_FILE, DIFFUSERS_FILE_2, export_embeddings
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.families.sd_tiny import TINY_SDXL_WIDTH_2

WIDTH = 32  # the tiny SDXL's first encoder


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return fetch_model("tiny-sdxl", tmp_path_factory.mktemp("cache")).path


def _vectors(width: int, seed: int) -> torch.Tensor:
    return torch.randn(1, width, generator=torch.Generator().manual_seed(seed))


def _rows(pipeline: StableDiffusionXLPipeline, token: str) -> list[torch.Tensor]:
    rows = []
    for tokenizer, encoder in ((pipeline.tokenizer, pipeline.text_encoder),
                               (pipeline.tokenizer_2, pipeline.text_encoder_2)):
        ids = tokenizer(token, add_special_tokens=False).input_ids
        assert len(ids) == 1, f"{token!r} is {len(ids)} tokens"
        rows.append(encoder.get_input_embeddings().weight[ids].detach())
    return rows


def test_both_forms_load_into_both_encoders(model_path, tmp_path):
    clip_l, clip_g = _vectors(WIDTH, 1), _vectors(TINY_SDXL_WIDTH_2, 2)
    files = export_embeddings({"zorx": clip_l}, tmp_path, step=10, second={"zorx": clip_g})
    assert set(files.sizes) == {str(tmp_path / n) for n in (
        "zorx.safetensors", f"zorx-diffusers/{DIFFUSERS_FILE}", f"zorx-diffusers/{DIFFUSERS_FILE_2}")}
    single = load_file(tmp_path / "zorx.safetensors")
    assert single.keys() == {"clip_l", "clip_g"}
    folder = tmp_path / "zorx-diffusers"
    for first, second in [  # what each form gives load_textual_inversion, per encoder
            ({"pretrained_model_name_or_path": single["clip_l"]}, {"pretrained_model_name_or_path": single["clip_g"]}),
            ({"pretrained_model_name_or_path": str(folder)},
             {"pretrained_model_name_or_path": str(folder), "weight_name": DIFFUSERS_FILE_2})]:
        pipeline = StableDiffusionXLPipeline.from_pretrained(model_path, local_files_only=True)
        pipeline.load_textual_inversion(**first, token="zorx", text_encoder=pipeline.text_encoder,
                                        tokenizer=pipeline.tokenizer)
        pipeline.load_textual_inversion(**second, token="zorx", text_encoder=pipeline.text_encoder_2,
                                        tokenizer=pipeline.tokenizer_2)
        got = _rows(pipeline, "zorx")
        assert torch.equal(got[0], clip_l) and torch.equal(got[1], clip_g)


def test_vector_counts_must_match(tmp_path):
    with pytest.raises(ConfigError, match="1 vector\\(s\\) for the first text encoder but 2 for the second"):
        export_embeddings({"zorx": _vectors(WIDTH, 1)}, tmp_path,
                          second={"zorx": torch.zeros(2, TINY_SDXL_WIDTH_2)})
