"""A safetensors file written one tensor at a time: no serialized copy of the whole state in
memory, and tensors on a GPU are copied to the host one by one (the format: an 8-byte
little-endian header length, a JSON header of dtype, shape and byte offsets per tensor,
padded with spaces to a multiple of 8, then the tensors' bytes back to back)."""

from __future__ import annotations

import json
import struct
from typing import BinaryIO

import torch

DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
          torch.bool: "BOOL"}


def write_safetensors(file: BinaryIO, tensors: dict[str, torch.Tensor]) -> None:
    header, offset = {}, 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    file.write(struct.pack("<Q", len(encoded)) + encoded)
    for tensor in tensors.values():
        host = tensor.detach().to("cpu").contiguous().reshape(-1)
        file.write(host.view(torch.uint8).numpy().tobytes())
