"""--device against what torch can use on this machine: a wrong one is named with the devices there are."""

import pytest
import torch

from dreambooth_core.errors import ConfigError
from dreambooth_core.training.devices import resolve_device


def test_auto_and_cpu_are_always_there():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["banana", "CUDA", "meta", "cuda:x", ""])
def test_a_name_that_is_no_device_here_lists_the_devices_there_are(name):
    with pytest.raises(ConfigError) as raised:
        resolve_device(name)
    assert str(raised.value).startswith(f"--device {name!r} is not a device this tool runs on. Devices here: cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_it_says_why_and_what_to_pass(name):
    with pytest.raises(ConfigError) as raised:
        resolve_device(name)
    message = str(raised.value)
    assert message.startswith(f"--device {name}: ") and "Devices here: cpu." in message
    assert "Pass --device cpu, or --device auto" in message
    assert ("built without CUDA" if torch.version.cuda is None else "finds no GPU here") in message


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_index_past_the_last_gpu_is_refused():
    count = torch.cuda.device_count()
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match=f"this machine has {count} CUDA GPU"):
        resolve_device(f"cuda:{count}")
