"""Safetensors written one tensor at a time load in safetensors itself, every dtype we save."""

import io

import safetensors.torch
import torch

from dreambooth_core.session.tensor_files import write_safetensors


def test_streamed_files_load_in_safetensors_with_every_value_and_dtype():
    g = torch.Generator().manual_seed(0)
    tensors = {"weight": torch.randn(3, 5, generator=g), "bf16": torch.randn(7, generator=g).bfloat16(),
               "half": torch.randn(2, 2, generator=g).half(), "scalar": torch.tensor(3.0),
               "empty": torch.zeros(0), "step": torch.tensor(12, dtype=torch.int64),
               "mask": torch.tensor([True, False]), "codes": torch.arange(9, dtype=torch.uint8).view(3, 3).t()}
    file = io.BytesIO()
    write_safetensors(file, tensors)
    loaded = safetensors.torch.load(file.getvalue())
    assert loaded.keys() == tensors.keys()
    assert all(loaded[k].dtype == v.dtype and torch.equal(loaded[k], v) for k, v in tensors.items())
