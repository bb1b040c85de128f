"""klein LoRA files load into a fresh Flux2KleinPipeline and give the trained transformer's output.

Tolerance: 1e-5 absolute on outputs of size ~1 (measured differences are ~2e-7: float32 rounding of
the alpha/rank scale, which the readers fold into lora_A or lora_B where peft scales the product).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from diffusers import Flux2KleinPipeline, Flux2Transformer2DModel
from peft import LoraConfig
from safetensors import safe_open

from dreambooth_core.errors import ModelError
from dreambooth_core.families.klein_lora import (
    KLEIN_LORA_TARGETS,
    export_klein_lora,
    kohya_klein_lora_state,
    save_diffusers_klein_lora,
    save_kohya_klein_lora,
)

TOLERANCE = 1e-5
RANK, ALPHA = 4, 7  # alpha != rank: a writer that drops the scale gives other numbers


def _adapted(folder: Path, targets, rank: int = RANK, alpha: int = ALPHA) -> Flux2Transformer2DModel:
    """The tiny transformer with a LoRA whose lora_B is not zero (peft starts it at zero)."""
    transformer = Flux2Transformer2DModel.from_pretrained(folder, subfolder="transformer")
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                       target_modules=targets))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return transformer


def _fixed_input(transformer) -> dict[str, torch.Tensor]:
    """4x4 latent tokens and 8 text tokens with klein's 4-axis position ids."""
    generator = torch.Generator().manual_seed(2)
    config = transformer.config
    h, w = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    zeros = torch.zeros(16)
    img_ids = torch.stack([zeros, h.flatten(), w.flatten(), zeros], dim=-1)[None]
    txt_ids = torch.stack([torch.zeros(8)] * 3 + [torch.arange(8.0)], dim=-1)[None]
    return dict(hidden_states=torch.randn(1, 16, config.in_channels, generator=generator),
                encoder_hidden_states=torch.randn(1, 8, config.joint_attention_dim, generator=generator),
                timestep=torch.tensor([0.7]), img_ids=img_ids, txt_ids=txt_ids)


def _output(transformer, inputs) -> torch.Tensor:
    with torch.no_grad():
        return transformer(**inputs).sample


def _adapted_modules(transformer) -> set[str]:
    return {name.rsplit(".lora_A", 1)[0] for name, _ in transformer.named_parameters() if ".lora_A." in name}


def _load_in_fresh_pipeline(folder: Path, source: Path) -> tuple[Flux2KleinPipeline, list[str]]:
    """diffusers' load_lora_weights on a new pipeline, and the warnings it logged (unexpected or
    unsupported keys are warnings there, not errors)."""
    pipeline = Flux2KleinPipeline.from_pretrained(folder, local_files_only=True)
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    try:
        pipeline.load_lora_weights(str(source))
    finally:
        logger.removeHandler(handler)
    return pipeline, warnings


def test_default_targets_are_diffusers_klein_defaults_on_every_block(tiny_klein):
    transformer = _adapted(tiny_klein, KLEIN_LORA_TARGETS)
    double = {f"transformer_blocks.{i}.attn.{m}" for i in range(2)
              for m in ("to_q", "to_k", "to_v", "to_out.0")}
    single = {f"single_transformer_blocks.{i}.attn.{m}" for i in range(2)
              for m in ("to_qkv_mlp_proj", "to_out")}
    assert _adapted_modules(transformer) == double | single


@pytest.mark.parametrize("form", ["kohya", "diffusers"])
def test_file_reproduces_the_adapted_transformer(tiny_klein, tmp_path, form):
    transformer = _adapted(tiny_klein, KLEIN_LORA_TARGETS)
    inputs = _fixed_input(transformer)
    expected = _output(transformer, inputs)
    transformer.disable_adapters()
    assert (expected - _output(transformer, inputs)).abs().max() > 100 * TOLERANCE
    transformer.enable_adapters()

    files = export_klein_lora(transformer, tmp_path, "subject")
    source = Path(files.kohya_file if form == "kohya" else files.diffusers_folder)
    pipeline, warnings = _load_in_fresh_pipeline(tiny_klein, source)
    assert warnings == []
    assert _adapted_modules(pipeline.transformer) == _adapted_modules(transformer)
    torch.testing.assert_close(_output(pipeline.transformer, inputs), expected, rtol=0, atol=TOLERANCE)


def test_every_module_the_kohya_file_can_hold_with_a_partly_trained_qkv(tiny_klein, tmp_path):
    # Every Linear but the shared modulation and the final adaLN; the text stream's k untrained.
    targets = [r".*(attn\.(to_q|to_k|to_v|add_q_proj|add_v_proj|to_out\.0|to_add_out|to_qkv_mlp_proj)"
               r"|single_transformer_blocks\.\d+\.attn\.to_out|linear_in|linear_out)",
               "x_embedder", "context_embedder", r".*timestep_embedder\.linear_[12]", "proj_out"]
    transformer = _adapted(tiny_klein, "|".join(targets))
    adapted = _adapted_modules(transformer)
    plain = Flux2Transformer2DModel.from_pretrained(tiny_klein, subfolder="transformer")
    linears = {name for name, module in plain.named_modules() if isinstance(module, torch.nn.Linear)}
    untrained = {"double_stream_modulation_img.linear", "double_stream_modulation_txt.linear",
                 "single_stream_modulation.linear", "norm_out.linear", "transformer_blocks.0.attn.add_k_proj",
                 "transformer_blocks.1.attn.add_k_proj"}
    assert adapted == linears - untrained
    inputs = _fixed_input(transformer)
    save_kohya_klein_lora(transformer, tmp_path / "all.safetensors")
    pipeline, warnings = _load_in_fresh_pipeline(tiny_klein, tmp_path / "all.safetensors")
    assert warnings == []
    torch.testing.assert_close(_output(pipeline.transformer, inputs), _output(transformer, inputs),
                               rtol=0, atol=TOLERANCE)


def test_diffusers_folder_holds_the_shared_modulation_that_kohya_cannot(tiny_klein, tmp_path):
    transformer = _adapted(tiny_klein, ["to_q", "double_stream_modulation_img.linear", "norm_out.linear"])
    with pytest.raises(ModelError, match="double_stream_modulation_img.linear"):
        save_kohya_klein_lora(transformer, tmp_path / "refused.safetensors")
    assert not (tmp_path / "refused.safetensors").exists()
    save_diffusers_klein_lora(transformer, tmp_path / "folder")
    pipeline, warnings = _load_in_fresh_pipeline(tiny_klein, tmp_path / "folder")
    inputs = _fixed_input(transformer)
    assert warnings == []
    torch.testing.assert_close(_output(pipeline.transformer, inputs), _output(transformer, inputs),
                               rtol=0, atol=TOLERANCE)


def test_kohya_file_fuses_qkv_exactly_and_says_its_rank_and_alpha(tiny_klein, tmp_path):
    transformer = _adapted(tiny_klein, KLEIN_LORA_TARGETS)
    state = kohya_klein_lora_state(transformer)
    key = "lora_unet_double_blocks_0_img_attn_qkv"
    down, up, alpha = state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"], state[f"{key}.alpha"]
    assert down.shape[0] == up.shape[1] == 3 * RANK and alpha.item() == 3 * ALPHA
    attention = transformer.transformer_blocks[0].attn
    delta = torch.cat([layer.lora_B["default"].weight @ layer.lora_A["default"].weight
                       for layer in (attention.to_q, attention.to_k, attention.to_v)])
    torch.testing.assert_close(up @ down, delta, rtol=0, atol=1e-6)
    assert state["lora_unet_single_blocks_1_linear2.alpha"].item() == ALPHA
    save_kohya_klein_lora(transformer, tmp_path / "k.safetensors")
    with safe_open(str(tmp_path / "k.safetensors"), "pt") as file:
        metadata = file.metadata()
    assert (metadata["ss_network_module"], metadata["ss_network_dim"], metadata["ss_network_alpha"]) == \
        ("networks.lora_flux", str(RANK), str(ALPHA))


def test_transformer_without_the_adapter_is_refused(tiny_klein, tmp_path):
    transformer = Flux2Transformer2DModel.from_pretrained(tiny_klein, subfolder="transformer")
    with pytest.raises(ModelError, match="no LoRA adapter named 'default'"):
        export_klein_lora(transformer, tmp_path, "nothing")
