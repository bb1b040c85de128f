"""FLUX.1 LoRA export: the single file and the diffusers folder each load with
FluxPipeline.load_lora_weights into a fresh pipeline, every key applied and none left over,
which then computes what the trained peft model computes (alpha != rank, so the scale shows)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import flux_loading as loading
import pytest
import torch
from diffusers import FluxPipeline
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dreambooth_core.errors import ModelError
from dreambooth_core.families.flux_lora import (
    DIFFUSERS_FILE, FLUX_TEXT_LORA_TARGETS, FLUX_TRANSFORMER_LORA_TARGETS, export_flux_lora, flux_lora_state)
from dreambooth_core.families.flux_tiny import TINY_FLUX_WIDTHS, build_tiny_flux_model

# The adapted and the loaded model run the same operations on the same numbers: they agree to
# float32 rounding at most (in practice exactly).
TOLERANCE = dict(atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_tiny_flux_model(tmp_path_factory.mktemp("flux") / "model", "dev")


def _fresh(base: Path) -> FluxPipeline:
    return FluxPipeline.from_pretrained(base, local_files_only=True)


def _randomise_lora_b(model, seed: int) -> None:
    # peft starts lora_B at zero (no effect): give it a visible random value.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def _adapted(base: Path, text: bool = True, **options) -> FluxPipeline:
    pipeline = _fresh(base)
    targets = list(FLUX_TRANSFORMER_LORA_TARGETS)
    pipeline.transformer.add_adapter(LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian",
                                                target_modules=targets, **options))
    _randomise_lora_b(pipeline.transformer, 1)
    if text:
        config = LoraConfig(r=2, lora_alpha=3, init_lora_weights="gaussian",
                            target_modules=list(FLUX_TEXT_LORA_TARGETS))
        inject_adapter_in_model(config, pipeline.text_encoder)
        _randomise_lora_b(pipeline.text_encoder, 2)
    return pipeline


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    pipeline = _adapted(base)
    out = tmp_path_factory.mktemp("lora")
    files = export_flux_lora(pipeline.transformer, pipeline.text_encoder, out, "shrk")
    return pipeline, files


def _outputs(pipeline: FluxPipeline) -> tuple[torch.Tensor, torch.Tensor]:
    """The transformer's prediction for fixed inputs, and CLIP's pooled output for a fixed prompt."""
    result = loading.outputs(pipeline)
    return result["prediction"], result["pooled"]


class _Messages(logging.Handler):
    """What diffusers and peft log (diffusers' loggers do not propagate to the root)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _load(pipeline: FluxPipeline, source: str) -> list[str]:
    """load_lora_weights, returning every warning logged or raised on the way."""
    messages = _Messages()
    loggers = [logging.getLogger(name) for name in ("diffusers", "peft", "transformers")]
    levels = [logger.level for logger in loggers]  # the CLI quiets them: a test before may have run it
    for logger in loggers:
        logger.addHandler(messages)
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as raised:
            warnings.simplefilter("always")
            pipeline.load_lora_weights(source)
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(messages)
            logger.setLevel(level)
    return messages.lines + [str(w.message) for w in raised]


def _lora_modules(model) -> set[str]:
    return {name for name, module in model.named_modules() if isinstance(module, LoraLayer)}


@pytest.mark.parametrize("form", ["single file", "diffusers folder"])
def test_loaded_lora_computes_what_the_peft_model_computes(form, base, trained):
    pipeline, files = trained
    expected, untouched = _outputs(pipeline), _outputs(_fresh(base))
    loaded = _fresh(base)
    messages = _load(loaded, files.single_file if form == "single file" else files.diffusers_folder)
    assert not [line for line in messages if "key" in line.lower()], messages
    # Every adapted module came back, and only those.
    assert _lora_modules(loaded.transformer) == _lora_modules(pipeline.transformer)
    assert _lora_modules(loaded.text_encoder) == _lora_modules(pipeline.text_encoder)
    for got, want, before in zip(_outputs(loaded), expected, untouched):
        assert not torch.allclose(before, want, atol=1e-3)  # the adapters do change the outputs
        torch.testing.assert_close(got, want, **TOLERANCE)


def test_a_key_diffusers_cannot_place_is_caught(base, trained, tmp_path):
    """The check above would see a key left over: diffusers warns about it."""
    _, files = trained
    state = load_file(files.single_file)
    rank, width = 4, TINY_FLUX_WIDTHS["transformer"]
    state |= {"transformer.transformer_blocks.0.attn.nowhere.lora_A.weight": torch.zeros(rank, width),
              "transformer.transformer_blocks.0.attn.nowhere.lora_B.weight": torch.zeros(width, rank)}
    save_file(state, tmp_path / "extra.safetensors")
    messages = _load(_fresh(base), str(tmp_path / "extra.safetensors"))
    assert [line for line in messages if "unexpected keys" in line and "attn.nowhere" in line]


def test_alpha_is_in_the_single_file_and_it_matters(base, trained, tmp_path):
    pipeline, files = trained
    state = load_file(files.single_file)
    alphas = {key: t.item() for key, t in state.items() if key.endswith(".alpha")}
    assert {v for k, v in alphas.items() if k.startswith("transformer.")} == {8.0}
    assert {v for k, v in alphas.items() if k.startswith("text_encoder.")} == {3.0}
    save_file({k: t for k, t in state.items() if k not in alphas}, tmp_path / "no-alpha.safetensors")
    without = _fresh(base)
    _load(without, str(tmp_path / "no-alpha.safetensors"))
    assert not torch.allclose(_outputs(without)[0], _outputs(pipeline)[0], atol=1e-3)


def test_rslora_scale_survives_the_single_file(base, tmp_path):
    pipeline = _adapted(base, text=False, use_rslora=True)
    files = export_flux_lora(pipeline.transformer, None, tmp_path, "rs")
    loaded = _fresh(base)
    _load(loaded, files.single_file)
    torch.testing.assert_close(_outputs(loaded)[0], _outputs(pipeline)[0], **TOLERANCE)


def test_single_file_names_and_metadata(trained):
    _, files = trained
    with safe_open(files.single_file, "pt") as file:
        keys, metadata = set(file.keys()), file.metadata()
    assert "transformer.single_transformer_blocks.2.attn.to_q.lora_A.weight" in keys  # suffix match
    assert "transformer.transformer_blocks.1.ff_context.net.2.lora_B.weight" in keys
    assert "text_encoder.text_model.encoder.layers.1.self_attn.out_proj.alpha" in keys
    assert not [key for key in keys if "proj_mlp" in key or "norm" in key]
    assert all(key.startswith(("transformer.", "text_encoder.")) for key in keys)
    # 12 module kinds in each of 2 double blocks, q/k/v in each of 3 single blocks; CLIP: 4 x 2 layers.
    assert len(keys) == 3 * (12 * 2 + 3 * 3 + 4 * 2)
    assert {k: metadata[k] for k in ("ss_network_module", "ss_network_dim", "ss_network_alpha")} == \
        {"ss_network_module": "networks.lora_flux", "ss_network_dim": "4", "ss_network_alpha": "8"}
    folder_file = Path(files.diffusers_folder) / DIFFUSERS_FILE
    assert files.sizes == {files.single_file: Path(files.single_file).stat().st_size,
                           str(folder_file): folder_file.stat().st_size}


def test_half_precision_keeps_alpha_exact(trained):
    pipeline, _ = trained
    state = flux_lora_state(pipeline.transformer, pipeline.text_encoder, dtype=torch.bfloat16)
    assert {t.dtype for k, t in state.items() if not k.endswith(".alpha")} == {torch.bfloat16}
    assert {t.dtype for k, t in state.items() if k.endswith(".alpha")} == {torch.float32}


def test_both_forms_load_with_transformers4(base, trained, tmp_path):
    """diffusers 0.35 with transformers 4.57 (the overlay setup.sh installs) loads the tiny FLUX
    folder as 5.x does and applies both LoRA forms to the same result."""
    pipeline, files = trained
    jobs = [{"model": str(base), "lora": source}
            for source in (None, files.single_file, files.diffusers_folder)]
    old = loading.with_transformers4(jobs, tmp_path)
    assert old["versions"]["transformers"].startswith("4.")
    base_then, *loaded = old["results"]
    base_now = loading.run(jobs[0])
    assert torch.equal(base_then["clip_ids"], base_now["clip_ids"])
    assert torch.equal(base_then["t5_ids"], base_now["t5_ids"])
    for key in ("prediction", "pooled", "t5"):  # T5's attention is computed a little differently in 4.x
        torch.testing.assert_close(base_then[key], base_now[key], atol=1e-5, rtol=0)
    expected = loading.outputs(pipeline)
    for result in loaded:
        for key in ("prediction", "pooled"):
            torch.testing.assert_close(result[key], expected[key], atol=1e-5, rtol=0)


def test_model_without_adapters_is_refused(base, tmp_path):
    with pytest.raises(ModelError, match="FluxTransformer2DModel has no LoRA adapter named 'default'"):
        export_flux_lora(_fresh(base).transformer, None, tmp_path, "none")


def test_dora_is_refused(base, tmp_path):
    transformer = _fresh(base).transformer
    transformer.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["attn.to_q"], use_dora=True))
    with pytest.raises(ModelError, match="uses DoRA"):
        export_flux_lora(transformer, None, tmp_path, "dora")
