"""The CUDA dry run passes on the landed code and names each fault injected into a copy of a
module. It needs PyPI's CUDA build of torch (`./setup.sh --cuda-dry-run` makes .cuda-venv) and
the fake CUDA runtime's source (../shared/fakecuda): without them these tests are skipped."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "cuda_dry_run.py"
CUDA_PYTHON = Path(os.environ.get("DREAMBOOTH_CUDA_PYTHON", REPO / ".cuda-venv" / "bin" / "python"))
FAKECUDA = Path(os.environ.get("FAKECUDA_SOURCE", REPO.parent / "shared" / "fakecuda"))

pytestmark = [pytest.mark.slow,  # a dry run each (10 s to 7 minutes)
              pytest.mark.skipif(not CUDA_PYTHON.is_file() or not (FAKECUDA / "build.sh").is_file()
                                 or shutil.which("gcc") is None,
                                 reason=f"the CUDA dry run needs {CUDA_PYTHON} (./setup.sh --cuda-dry-run), "
                                        f"{FAKECUDA} and gcc")]

# (name, module, text in it, the fault put in its place, words of the case that runs it, fault kind,
#  a pattern of the frame named)
FAULTS = [
    ("a .to(device) left out", "dreambooth_core.families.objectives",
     "torch.randn(shape, generator=generator).to(device)", "torch.randn(shape, generator=generator)",
     ["tiny", "dreambooth", "bf16", "prior"], "device mismatch", r"objectives\.py:\d+ in latents"),
    ("a step outside autocast", "dreambooth_core.training.trainer",
     "        with self._autocast():\n            condition",
     "        with contextlib.nullcontext():\n            condition",
     ["tiny", "textual-inversion", "bf16", "prior"], "dtype mix", "conditioning.py"),
    (".item() in the step", "dreambooth_core.training.trainer",
     "        return dreambooth_loss(", "        prediction.sum().item()\n        return dreambooth_loss(",
     ["tiny", "lora", "bf16", "prior"], "host sync", "in loss"),
    ("a copy to the host in the step", "dreambooth_core.training.trainer",
     "        return dreambooth_loss(", "        prediction.cpu()\n        return dreambooth_loss(",
     ["tiny", "lora", "bf16", "prior"], "host sync", "in loss"),
    ("a CUDA index into a CPU tensor", "dreambooth_core.families.objectives",
     "alphas_cumprod.to(timesteps.device)[timesteps]", "torch.ones(1000)[timesteps]",
     ["tiny", "textual-inversion", "min-snr"], "CUDA index into a CPU tensor", "in signal_to_noise"),
    ("a frozen text encoder left on the GPU", "dreambooth_core.training.trainer",
     "        self._frozen_embeddings = {c: found[c] for c in captions}\n"
     "        self._move_text_encoders(HOST)",
     "        self._frozen_embeddings = {c: found[c] for c in captions}",
     ["tiny", "lora", "bf16", "prior"], "AssertionError", "state_checks"),
    ("a frozen weight left in fp32", "dreambooth_core.training.memory.frozen_weights",
     "    if dtype == torch.float32:\n        return", "    return",
     ["tiny", "lora", "bf16", "prior"], "AssertionError", "state_checks"),
    ("FLUX's text positions made on the host", "dreambooth_core.families.flux",
     "txt_ids=torch.zeros(condition.hidden.shape[1], 3, device=noisy.device)",
     "txt_ids=torch.zeros(condition.hidden.shape[1], 3)",
     ["tiny-flux", "lora", "bf16", "prior"], "device mismatch", r"flux\.py:\d+ in predict"),
    ("the flow's noise level left on the host", "dreambooth_core.families.objectives",
     "latents.shape[-2] * latents.shape[-1] // self.patch ** 2).to(device)",
     "latents.shape[-2] * latents.shape[-1] // self.patch ** 2)",
     ["tiny-klein", "lora", "bf16", "prior"], "device mismatch", r"objectives\.py:\d+ in noisy_batch"),
    ("--offload's block not brought back for its backward", "dreambooth_core.training.memory.offload",
     "                self._bring_in(unit, state=True)", "                pass",
     ["tiny-flux", "offload", "checkpointing"], "dtype mix", "in step"),
    ("--offload's write-back waiting for the GPU", "dreambooth_core.training.memory.offload",
     "home.copy_(parameter.data, non_blocking=True)", "home.copy_(parameter.data)",
     ["tiny-sdxl", "offload", "checkpointing"], "host sync", r"offload\.py:\d+ in _send_out"),
]


def dry_run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    out = tmp_path / "results.json"
    result = subprocess.run([str(CUDA_PYTHON), str(SCRIPT), "--tiny", "--json", str(out), *args],
                            capture_output=True, text=True, timeout=1200, cwd=REPO)
    return result, json.loads(out.read_text()) if out.is_file() else []


@pytest.mark.timeout(1200)  # the whole tiny matrix: about 10 minutes on 2 busy cores
def test_every_case_passes_on_the_landed_code(tmp_path):
    result, results = dry_run(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(results) >= 60 and all(r["passed"] for r in results)
    names = [r["case"].split() for r in results]
    for words in (("tiny-sdxl", "lora", "fp16"), ("adamw-8bit",), ("step-in-backward",), ("ema",), ("t4",),
                  ("tiny-flux", "dreambooth", "no"), ("tiny-flux", "lora", "fp16"),
                  ("tiny-flux-schnell", "lora"), ("tiny-flux", "lora", "text-encoder"),
                  ("tiny-flux", "offset+flip"),
                  ("tiny-klein", "dreambooth", "fp16"), ("tiny-klein", "lora", "bf16"),
                  ("tiny-klein", "step-in-backward"), ("tiny-klein", "t4"),
                  ("tiny-flux", "lora", "int8-base"), ("tiny-klein", "int8-base"), ("tiny-sdxl", "fp8-base"),
                  ("textual-inversion", "fp8-base"), ("tiny-sdxl", "offload"), ("tiny-flux", "offload", "adamw-8bit")):
        assert any(all(w in name for w in words) for name in names), words
    # What the flow families refuse (textual inversion, min-SNR) and klein's untrained text encoder: no case.
    for model in ("tiny-flux", "tiny-flux-schnell", "tiny-klein"):
        own = [name for name in names if name[0] == model]
        assert own and not any({"textual-inversion", "min-snr"} & set(name) for name in own), model
    assert not any(name[0] == "tiny-klein" and "text-encoder" in name for name in names)
    # DreamBooth trains the denoiser itself: no quantised base under it (quantised.check_base_precision).
    assert not any("dreambooth" in name and {"int8-base", "fp8-base"} & set(name) for name in names)
    quantised = [r for r in results if "int8-base" in r["case"] or "fp8-base" in r["case"]]
    assert quantised and all(any(" quantised" in c for c in r["checked"]) for r in quantised)
    # Text encoders no step trains wait on the host; in the text-encoder phase they train on the GPU.
    checked = {r["case"]: r["checked"] for r in results}
    assert "text encoders on cpu" in checked["tiny lora bf16 prior"]
    assert "text encoders on cpu" in checked["tiny-flux lora bf16 prior"]
    assert "text encoders on cuda" in checked["tiny textual-inversion bf16 prior"]
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
    assert first["kind"] == kind and re.search(frame, first["frame"]), first
    assert first["case"] in result.stdout and kind in result.stdout  # the table names it too
