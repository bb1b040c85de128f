"""The CUDA dry run passes on the landed code and names each fault injected into a copy of a
module. It needs PyPI's CUDA build of torch (`./setup.sh --cuda-dry-run` makes .cuda-venv) and
the fake CUDA runtime's source (../shared/fakecuda): without them these tests are skipped."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "cuda_dry_run.py"
CUDA_PYTHON = Path(os.environ.get("DREAMBOOTH_CUDA_PYTHON", REPO / ".cuda-venv" / "bin" / "python"))
FAKECUDA = Path(os.environ.get("FAKECUDA_SOURCE", REPO.parent / "shared" / "fakecuda"))

pytestmark = [pytest.mark.slow,  # a dry run each (10-90 s)
              pytest.mark.skipif(not CUDA_PYTHON.is_file() or not (FAKECUDA / "build.sh").is_file()
                                 or shutil.which("gcc") is None,
                                 reason=f"the CUDA dry run needs {CUDA_PYTHON} (./setup.sh --cuda-dry-run), "
                                        f"{FAKECUDA} and gcc")]

# (name, module, text in it, the fault put in its place, words of the case that runs it, fault kind, frame)
FAULTS = [
    ("a .to(device) left out", "dreambooth_core.training.trainer",
     "torch.randn(shape, generator=generator).to(device)", "torch.randn(shape, generator=generator)",
     ["tiny", "dreambooth", "bf16", "prior"], "device mismatch", "in loss"),
    ("a step outside autocast", "dreambooth_core.training.trainer",
     "with self._autocast():", "with contextlib.nullcontext():",
     ["tiny", "textual-inversion", "bf16", "prior"], "dtype mix", "conditioning.py"),
    (".item() in the step", "dreambooth_core.training.trainer",
     "        return dreambooth_loss(", "        per_example.sum().item()\n        return dreambooth_loss(",
     ["tiny", "lora", "bf16", "prior"], "host sync", "in loss"),
    ("a copy to the host in the step", "dreambooth_core.training.trainer",
     "        return dreambooth_loss(", "        per_example.cpu()\n        return dreambooth_loss(",
     ["tiny", "lora", "bf16", "prior"], "host sync", "in loss"),
    ("a CUDA index into a CPU tensor", "dreambooth_core.families.objectives",
     "alphas_cumprod.to(timesteps.device)[timesteps]", "torch.ones(1000)[timesteps]",
     ["tiny", "textual-inversion", "min-snr+offset+flip"], "CUDA index into a CPU tensor", "in signal_to_noise"),
    ("a frozen weight left in fp32", "dreambooth_core.training.frozen_weights",
     "    if dtype == torch.float32:\n        return", "    return",
     ["tiny", "lora", "bf16", "prior"], "AssertionError", "state_checks"),
]


def dry_run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    out = tmp_path / "results.json"
    result = subprocess.run([str(CUDA_PYTHON), str(SCRIPT), "--tiny", "--json", str(out), *args],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    return result, json.loads(out.read_text()) if out.is_file() else []


def test_every_case_passes_on_the_landed_code(tmp_path):
    result, results = dry_run(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(results) >= 30 and all(r["passed"] for r in results)
    names = [r["case"] for r in results]
    for words in (("tiny-sdxl", "lora", "fp16"), ("adamw-8bit",), ("step-in-backward",), ("ema",), ("t4",)):
        assert any(all(w in name.split() for w in words) for name in names), words
    eight_bit_fp16 = next(r for r in results if "adamw-8bit" in r["case"] and "fp16" in r["case"])
    assert any("GradScaler" in why for why in eight_bit_fp16["known_syncs"])  # torch's own sync, said so


@pytest.mark.parametrize("name, module, original, fault, case, kind, frame", FAULTS, ids=[f[0] for f in FAULTS])
def test_an_injected_fault_is_named_with_the_frame_that_raised_it(tmp_path, name, module, original, fault, case,
                                                                  kind, frame):
    source = REPO / (module.replace(".", "/") + ".py")
    text = source.read_text()
    assert text.count(original) == 1, f"{original!r} is not in {source} once: update this test"
    copy = tmp_path / source.name
    copy.write_text(text.replace(original, fault))
    result, results = dry_run(tmp_path, "--cases", *case, "--replace-module", f"{module}={copy}")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    failed = [r for r in results if not r["passed"]]
    assert failed, results
    first = failed[0]
    assert first["kind"] == kind and frame in first["frame"], first
    assert first["case"] in result.stdout and kind in result.stdout  # the table names it too
