"""FLUX.1 transformer weights in BFL's single-file layout: an exact round trip at any width,
the names and shapes diffusers' own converter expects at full size, and a clear error for
weights of anything else."""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxTransformer2DModel
from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers
from safetensors.torch import load_file

from dreambooth_core.errors import ModelError
from dreambooth_core.families.flux_configs import write_flux_config_folder
from dreambooth_core.families.flux_layout import CHECKPOINT_PREFIX, from_bfl_state, to_bfl_state
from dreambooth_core.families.flux_tiny import TINY_FLUX_WIDTHS, build_tiny_flux_model
from dreambooth_core.model.safetensors_files import save_safetensors

WIDTH = TINY_FLUX_WIDTHS["transformer"]


@pytest.fixture(scope="module", params=["dev", "schnell"])
def tiny_transformer(request, tmp_path_factory):
    folder = build_tiny_flux_model(tmp_path_factory.mktemp(request.param) / "model", request.param)
    return folder, FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer",
                                                          local_files_only=True)


def test_round_trip_through_a_file_is_exact(tiny_transformer, tmp_path):
    folder, transformer = tiny_transformer
    state = transformer.state_dict()
    save_safetensors(to_bfl_state(state), tmp_path / "flux.safetensors")
    back = from_bfl_state(load_file(tmp_path / "flux.safetensors"))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[key], state[key]) and back[key].dtype == state[key].dtype for key in state)
    fresh = FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer", local_files_only=True)
    fresh.load_state_dict(back, strict=True)


def test_bfl_names_shapes_and_the_swapped_final_modulation(tiny_transformer):
    _, transformer = tiny_transformer
    state = transformer.state_dict()
    bfl = to_bfl_state(state)
    mlp = 4 * WIDTH
    assert bfl["double_blocks.1.img_attn.qkv.weight"].shape == (3 * WIDTH, WIDTH)
    assert torch.equal(bfl["double_blocks.1.txt_attn.qkv.bias"][WIDTH:2 * WIDTH],
                       state["transformer_blocks.1.attn.add_k_proj.bias"])
    assert bfl["single_blocks.2.linear1.weight"].shape == (3 * WIDTH + mlp, WIDTH)
    assert torch.equal(bfl["single_blocks.2.linear1.weight"][3 * WIDTH:],
                       state["single_transformer_blocks.2.proj_mlp.weight"])
    assert torch.equal(bfl["single_blocks.0.norm.key_norm.scale"],
                       state["single_transformer_blocks.0.attn.norm_k.weight"])
    scale, shift = state["norm_out.linear.weight"].chunk(2)
    assert torch.equal(bfl["final_layer.adaLN_modulation.1.weight"], torch.cat([shift, scale]))
    assert ("guidance_in.in_layer.weight" in bfl) == transformer.config.guidance_embeds
    assert not [key for key in bfl if key.startswith(("transformer_blocks", "single_transformer_blocks"))]


def test_checkpoint_prefix_is_accepted(tiny_transformer):
    _, transformer = tiny_transformer
    state = transformer.state_dict()
    prefixed = {CHECKPOINT_PREFIX + key: tensor for key, tensor in to_bfl_state(state).items()}
    assert from_bfl_state(prefixed).keys() == state.keys()


def test_weights_of_something_else_are_named(tiny_transformer):
    _, transformer = tiny_transformer
    state = transformer.state_dict()
    with pytest.raises(ModelError, match=r"unknown to a FLUX.1 transformer in diffusers' layout: "
                                         r"vae\.encoder\.conv_in\.weight \(1 in all\)"):
        to_bfl_state({**state, "vae.encoder.conv_in.weight": torch.zeros(1)})
    bfl = to_bfl_state(state)
    with pytest.raises(ModelError, match=r"unknown to a FLUX.1 transformer in BFL's layout: "
                                         r"double_blocks\.0\.img_mlp\.1\.weight"):
        from_bfl_state({**bfl, "double_blocks.0.img_mlp.1.weight": torch.zeros(1)})
    incomplete = {key: t for key, t in state.items() if key != "transformer_blocks.0.attn.to_k.weight"}
    with pytest.raises(ModelError, match=r"lack transformer_blocks\.0\.attn\.to_k\.weight, which "
                                         r"double_blocks\.0\.img_attn\.qkv\.weight needs"):
        to_bfl_state(incomplete)
    with pytest.raises(ModelError, match=r"single_blocks\.0\.linear1\.weight has 1 rows"):
        from_bfl_state({**bfl, "single_blocks.0.linear1.weight": torch.zeros(1, WIDTH)})


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_full_size_matches_what_diffusers_own_converter_reads(variant, tmp_path):
    """At FLUX.1's real width (shapes only, on the meta device): diffusers' converter turns our
    BFL state back into exactly the transformer's names and shapes, and so does ours."""
    folder = write_flux_config_folder(variant, tmp_path)
    with torch.device("meta"):
        transformer = FluxTransformer2DModel.from_config(
            FluxTransformer2DModel.load_config(folder, subfolder="transformer"))
    state = transformer.state_dict()
    bfl = to_bfl_state(state)
    assert bfl["single_blocks.37.linear1.weight"].shape == (3 * 3072 + 4 * 3072, 3072)
    for converted in (convert_flux_transformer_checkpoint_to_diffusers(dict(bfl)), from_bfl_state(bfl)):
        assert {key: tuple(t.shape) for key, t in converted.items()} == \
            {key: tuple(t.shape) for key, t in state.items()}


@pytest.mark.slow  # a 531 M-parameter model: ~1 GB written and ~3 GB of memory for a few seconds
def test_diffusers_from_single_file_reads_our_file_exactly_at_full_width(tmp_path):
    """diffusers splits linear1 at width 3072 only: a model of that width with one block of each
    kind (narrow text inputs) written by us loads through from_single_file bit for bit."""
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(num_layers=1, num_single_layers=1, attention_head_dim=128,
                                         num_attention_heads=24, joint_attention_dim=32,
                                         pooled_projection_dim=32, guidance_embeds=True).to(torch.bfloat16)
    transformer.save_config(tmp_path / "transformer")
    save_safetensors(to_bfl_state(transformer.state_dict()), tmp_path / "flux.safetensors")
    loaded = FluxTransformer2DModel.from_single_file(
        str(tmp_path / "flux.safetensors"), config=str(tmp_path), subfolder="transformer",
        local_files_only=True, torch_dtype=torch.bfloat16)
    expected, actual = transformer.state_dict(), loaded.state_dict()
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[key], expected[key]) for key in expected)
