"""The dry run's checks for what fake tensors accept and real kernels refuse (here on the CPU's
fake tensors: the dtype rules are the same on every device)."""

import sys
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from fake_cuda import KernelChecks, KernelFault  # noqa: E402


@pytest.mark.parametrize("layer, shape", [(torch.nn.Linear(8, 4, bias=False), (2, 8)),
                                          (torch.nn.Conv2d(3, 4, 3, bias=False), (1, 3, 8, 8))],
                         ids=["matrix product", "convolution without bias"])
def test_a_dtype_mix_fake_tensors_accept_is_a_fault(layer, shape):
    with FakeTensorMode(allow_non_fake_inputs=True):
        layer = layer.to(torch.bfloat16)
        x = torch.zeros(shape)
        layer(x)  # fake tensors alone let it through
        with KernelChecks(), pytest.raises(KernelFault, match="dtype mix.*bfloat16.*float32|dtype mix.*float32.*bfloat16"):
            layer(x)
        with KernelChecks():
            layer(x.to(torch.bfloat16))  # one dtype: fine


def test_a_value_read_is_a_host_sync_only_inside_the_step():
    checks = KernelChecks()
    with FakeTensorMode(allow_non_fake_inputs=True), checks:
        loss = torch.zeros(())
        assert loss.item() == 0  # outside the step: answered, as a fake tensor holds no value
        checks.in_step = True
        loss.item()  # a CPU tensor: no GPU to wait for
