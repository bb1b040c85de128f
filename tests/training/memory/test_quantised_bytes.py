"""A quantised base counted as the libraries lay it out: bytes per layer, and which layers."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from dreambooth_core.config import TrainingSettings
from dreambooth_core.families import load_model_parts
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.training.methods import set_up_method
from dreambooth_core.training.memory.quantised_bytes import (kept_unquantised, quantised_layers,
                                                             quantised_weight_bytes)

REPO = Path(__file__).resolve().parents[3]
CUDA_PYTHON = REPO / ".cuda-venv" / "bin" / "python"  # the dry run's venv: PyPI's torch and bitsandbytes
SHAPES = [(384, 320), (3072, 3072), (77, 1000), (10, 10)]
MEASURE = """
import json, sys, torch
from bitsandbytes.functional import int8_vectorwise_quant, quantize_4bit
def size(*tensors): return sum(t.numel() * t.element_size() for t in tensors)
out = []
for rows, cols in json.loads(sys.argv[1]):
    w = torch.randn(rows, cols, dtype=torch.bfloat16)
    packed, s = quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
    nf4 = size(packed, s.absmax, s.code, s.offset, s.state2.absmax, s.state2.code)
    cb, scb, _ = int8_vectorwise_quant(w.half())
    out.append({"nf4": nf4, "int8": size(cb, scb)})
print(json.dumps(out))
"""


@pytest.mark.slow  # a .cuda-venv subprocess importing bitsandbytes (about 6 s)
@pytest.mark.skipif(not CUDA_PYTHON.is_file(), reason="needs .cuda-venv (./setup.sh --cuda-dry-run): bitsandbytes")
def test_nf4_and_int8_take_the_bytes_bitsandbytes_allocates():
    """bitsandbytes quantises on the CPU too: its tensors for each shape, against our count."""
    run = subprocess.run([str(CUDA_PYTHON), "-c", MEASURE, json.dumps(SHAPES)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    measured = json.loads(run.stdout.splitlines()[-1])
    for (rows, cols), real in zip(SHAPES, measured):
        assert quantised_weight_bytes(rows * cols, rows, "nf4") == real["nf4"], (rows, cols)
        assert quantised_weight_bytes(rows * cols, rows, "int8") == real["int8"], (rows, cols)
    # a large layer: a little over half a byte per weight in nf4, a little over one in int8
    assert 0.51 < quantised_weight_bytes(3072 * 12288, 3072, "nf4") / (3072 * 12288) < 0.52


def test_fp8_is_one_byte_and_a_scale_per_row():
    assert quantised_weight_bytes(3072 * 12288, 3072, "fp8") == 3072 * 12288 + 4 * 3072
    assert quantised_weight_bytes(100, 10, "bf16") == 200


@pytest.fixture(scope="module")
def flux_lora(tmp_path_factory):
    """tiny-flux's parts (CLIP, T5, the transformer) with a LoRA set up, and each model's rule."""
    parts = load_model_parts(fetch_model("tiny-flux", tmp_path_factory.mktemp("cache")).path, torch.device("cpu"))
    kept = {id(m): kept_unquantised(m) for m in (parts.denoiser, *parts.text_encoders)}
    trainables = set_up_method(parts, TrainingSettings(method="lora", text_encoder_steps=0), ["shrk"], "person")
    return parts, kept, list(trainables.named().values())


def linears(module):
    return {name: m for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)}


def test_every_frozen_linear_layer_is_quantised_and_what_trains_is_not(flux_lora):
    parts, kept, trained = flux_lora
    denoiser = parts.denoiser
    layers = {id(q.weight) for q in quantised_layers(denoiser, kept[id(denoiser)], trained, "nf4")}
    frozen = {id(m.weight) for m in linears(denoiser).values() if not m.weight.requires_grad}
    assert layers == frozen and len(layers) > 10  # the LoRA's base layers among them
    assert any(".base_layer" in name for name in linears(denoiser))
    assert not layers & {id(t) for t in trained}  # lora_A / lora_B train: never quantised


def test_t5_keeps_its_wo_layers_unquantised_as_transformers_does(flux_lora):
    parts, kept, trained = flux_lora
    t5 = next(m for m in parts.text_encoders if type(m).__name__ == "T5EncoderModel")
    layers = {id(q.weight) for q in quantised_layers(t5, kept[id(t5)], trained, "int8")}
    wo = {name for name, m in linears(t5).items() if name.endswith(".wo")}
    assert wo and not any(id(linears(t5)[name].weight) in layers for name in wo)
    assert layers == {id(m.weight) for name, m in linears(t5).items() if name not in wo}
