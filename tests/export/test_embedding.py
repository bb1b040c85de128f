"""Textual-inversion export: each written file loads with diffusers' load_textual_inversion on
the tiny model, which then holds the token with exactly the saved vectors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from dreambooth_core.errors import ConfigError
from dreambooth_core.families.sd_embedding import DIFFUSERS_FILE, export_embedding, export_embeddings
from dreambooth_core.families.base_model import fetch_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return fetch_model("tiny", tmp_path_factory.mktemp("cache")).path


def _vectors(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 32, generator=torch.Generator().manual_seed(seed))


def _loaded_rows(model_path, source, tokens, **kwargs) -> torch.Tensor:
    pipeline = StableDiffusionPipeline.from_pretrained(model_path, local_files_only=True, safety_checker=None)
    assert not any(token in pipeline.tokenizer.get_vocab() for token in tokens)
    pipeline.load_textual_inversion(str(source), **kwargs)
    ids = pipeline.tokenizer.convert_tokens_to_ids(tokens)
    assert pipeline.tokenizer.unk_token_id not in ids
    return pipeline.text_encoder.get_input_embeddings().weight[ids].detach()


@pytest.mark.parametrize("count", [1, 3])
def test_every_format_loads_with_the_saved_vectors(count, model_path, tmp_path):
    vectors = _vectors(count, count)
    export_embedding("zorx", vectors, tmp_path, step=250)
    tokens = ["zorx"] + [f"zorx_{i}" for i in range(1, count)]
    for source, kwargs in [(tmp_path / "zorx-diffusers", {}),
                           (tmp_path / "zorx.safetensors", {"token": "zorx"}),
                           (tmp_path / "zorx.pt", {})]:
        assert torch.equal(_loaded_rows(model_path, source, tokens, **kwargs), vectors), source.name


def test_file_contents(tmp_path):
    vector = _vectors(1, 0)[0]
    files = export_embedding("zorx", vector, tmp_path, step=250)
    assert load_file(tmp_path / "zorx.safetensors").keys() == {"emb_params"}
    assert load_file(tmp_path / "zorx-diffusers" / DIFFUSERS_FILE).keys() == {"zorx"}
    pt = torch.load(tmp_path / "zorx.pt", weights_only=True)
    assert (pt["name"], pt["step"]) == ("zorx", 250)
    assert torch.equal(pt["string_to_param"]["*"], vector.reshape(1, 32))
    assert all(size < 2000 for size in files.sizes.values())  # 32 floats and a header
    assert set(files.sizes) == {str(tmp_path / name) for name in
                                ("zorx.safetensors", "zorx.pt", f"zorx-diffusers/{DIFFUSERS_FILE}")}


def test_several_tokens_without_pt(model_path, tmp_path):
    files = export_embeddings({"zorx": _vectors(1, 1), "karx": _vectors(2, 2)}, tmp_path, write_pt=False)
    assert sorted(Path(p).name for p in files.sizes) == ["karx.safetensors", "learned_embeds.safetensors",
                                                         "learned_embeds.safetensors", "zorx.safetensors"]
    pipeline = StableDiffusionPipeline.from_pretrained(model_path, local_files_only=True, safety_checker=None)
    pipeline.load_textual_inversion([str(tmp_path / "zorx-diffusers"), str(tmp_path / "karx-diffusers")])
    assert {"zorx", "karx", "karx_1"} <= set(pipeline.tokenizer.get_vocab())


@pytest.mark.parametrize("token, vectors, says", [
    ("../x", torch.zeros(32), "cannot name an embedding file"),
    ("zorx", torch.zeros(1, 2, 32), r"shape \(1, 2, 32\); expected \(width,\) or \(vectors, width\)"),
])
def test_bad_input_is_named(token, vectors, says, tmp_path):
    with pytest.raises(ConfigError, match=says):
        export_embedding(token, vectors, tmp_path)
