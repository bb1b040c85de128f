"""diffusers <-> BFL single-file layout for FLUX.2: exact both ways, read back by diffusers' own loader."""

from __future__ import annotations

import pytest
import torch
from diffusers import Flux2Transformer2DModel
from safetensors.torch import save_file

from dreambooth_core.errors import ModelError
from dreambooth_core.families.klein_configs import TRANSFORMER_4B
from dreambooth_core.families.klein_layout import from_bfl_state, to_bfl_state


@pytest.fixture
def random_state(tiny_klein) -> dict[str, torch.Tensor]:
    """The tiny transformer's state with every tensor random (its norms start as ones, which would
    hide a query/key or scale/shift mix-up)."""
    state = Flux2Transformer2DModel.from_pretrained(tiny_klein, subfolder="transformer").state_dict()
    generator = torch.Generator().manual_seed(0)
    return {key: torch.randn(t.shape, generator=generator) for key, t in state.items()}


def test_round_trip_is_exact(random_state):
    bfl = to_bfl_state(random_state)
    assert "double_blocks.1.img_attn.qkv.weight" in bfl and "single_blocks.1.linear1.weight" in bfl
    back = from_bfl_state(bfl)
    assert back.keys() == random_state.keys()
    assert all(torch.equal(back[key], random_state[key]) for key in back)


def test_diffusers_reads_our_single_file_exactly(random_state, tiny_klein, tmp_path):
    path = tmp_path / "klein.safetensors"
    save_file(to_bfl_state(random_state), str(path))
    # config= is required: the file alone would be taken for FLUX.2 [dev] and its hub config fetched.
    loaded = Flux2Transformer2DModel.from_single_file(
        str(path), config=str(tiny_klein), subfolder="transformer", local_files_only=True).state_dict()
    assert loaded.keys() == random_state.keys()
    assert all(torch.equal(loaded[key], random_state[key]) for key in loaded)


def test_all_in_one_prefix_is_accepted(random_state):
    prefixed = {f"model.diffusion_model.{key}": t for key, t in to_bfl_state(random_state).items()}
    assert from_bfl_state(prefixed).keys() == random_state.keys()


def test_real_size_4b_converts_on_the_meta_device():
    with torch.device("meta"):
        transformer = Flux2Transformer2DModel(**TRANSFORMER_4B)
    state = transformer.state_dict()
    bfl = to_bfl_state(state)
    hidden, mlp = 3072, 3 * 3072
    assert bfl["double_blocks.4.txt_attn.qkv.weight"].shape == (3 * hidden, hidden)
    assert bfl["single_blocks.19.linear1.weight"].shape == (3 * hidden + 2 * mlp, hidden)
    assert bfl["single_blocks.19.linear2.weight"].shape == (hidden, hidden + mlp)
    assert bfl["final_layer.adaLN_modulation.1.weight"].shape == (2 * hidden, hidden)
    assert not any(key.endswith(".bias") for key in bfl)
    back = from_bfl_state(bfl)
    assert {key: t.shape for key, t in back.items()} == {key: t.shape for key, t in state.items()}


def test_unknown_keys_are_refused_by_name(random_state):
    with pytest.raises(ModelError, match=r"transformer_blocks\.0\.attn\.to_q\.lora_A\.weight"):
        to_bfl_state({**random_state, "transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(2, 32)})
    flux1 = {**to_bfl_state(random_state), "vector_in.in_layer.weight": torch.zeros(32, 32)}
    with pytest.raises(ModelError, match=r"vector_in\.in_layer\.weight"):
        from_bfl_state(flux1)
    partial = {k: t for k, t in random_state.items() if k != "transformer_blocks.0.attn.to_k.weight"}
    with pytest.raises(ModelError, match="img_attn.qkv"):
        to_bfl_state(partial)
