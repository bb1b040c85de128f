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


# [lowvram]: what a device cannot run is said before any model loads (one function, which plan
# and the CLI both call).
from dreambooth_core.training.devices import offload_problem, precision_problem  # noqa: E402

T4, A100, RTX_4090 = (7, 5), (8, 0), (8, 9)


@pytest.mark.parametrize("mixed, base, capability, says", [
    ("auto", "fp8", A100, ["--base-precision fp8 needs a GPU with fp8", "compute capability 8.9", "this run "
                           "trains on a GPU of compute capability 8.0", "--base-precision int8"]),
    ("bf16", "auto", T4, ["--mixed-precision bf16 needs a GPU with bfloat16", "capability 7.5",
                          "--mixed-precision fp16, or auto"]),
    ("fp16", "bf16", T4, ["--base-precision bf16 needs a GPU with bfloat16", "--base-precision fp16"]),
    ("no", "nf4", None, ["--base-precision nf4 needs a CUDA GPU", "trains on the CPU"]),
])
def test_a_precision_the_device_lacks_is_named_with_what_to_use(mixed, base, capability, says):
    message = precision_problem(mixed, base, capability)
    assert message is not None and all(part in message for part in says), message


@pytest.mark.parametrize("mixed, base, capability", [
    ("fp16", "fp8", RTX_4090), ("bf16", "nf4", A100), ("fp16", "nf4", T4), ("fp16", "int8", T4),
    ("auto", "auto", T4), ("no", "int8", None), ("no", "fp8", None), ("no", "auto", None), ("bf16", "bf16", (9, 0))])
def test_what_the_device_has_passes(mixed, base, capability):
    assert precision_problem(mixed, base, capability) is None


def test_offload_is_refused_on_the_cpu_and_with_several_gpus_only():
    assert "nothing to offload to" in offload_problem(True, 1, "cpu")
    assert "--gpus 2" in offload_problem(True, 2, "cuda") and "DDP" in offload_problem(True, 2, "cuda")
    assert offload_problem(True, 1, "cuda") is None and offload_problem(False, 4, "cpu") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_the_plan_check_refuses_nf4_on_the_cpu_and_lets_int8_through():
    """make_plan's check, before and after a recorded plan is applied (a plan that quantised the base
    on a GPU, resumed on the CPU)."""
    from dreambooth_core.config import RuntimeSettings, TrainingSettings
    from dreambooth_core.training.plan import check_settings

    check_settings(TrainingSettings(base_precision="int8", method="lora"), RuntimeSettings(device="cpu"))
    with pytest.raises(ConfigError, match="--base-precision nf4 needs a CUDA GPU"):
        check_settings(TrainingSettings(base_precision="nf4", method="lora"), RuntimeSettings(device="cpu"))
