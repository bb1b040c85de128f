"""One command that checks our trainer on a GPU: speed, memory, a profile, the GPU tests.

    python benchmarks/gpu_check.py                              # CUDA, full-size SD 1.5 (sized for < 8 min on an H100)
    python benchmarks/gpu_check.py --device cpu --model tiny    # the same table on a CPU, for CI (< 1 min)

On `sd15`, the full-size Stable Diffusion 1.5 architecture built from its published
configuration with random weights (train_speed.py `sd15_parts`; nothing is downloaded),
it prints one markdown table:
- it/s at the model's resolution (512 px) with the default training settings and with
  prior preservation, in bf16, plain, with --channels-last, and with --compile
  --channels-last (compiling is skipped on a CPU: inductor builds C++ for minutes);
- the same step with 8-bit AdamW when bitsandbytes imports (else why not);
- each row's peak GPU memory (torch.cuda.max_memory_allocated) beside the estimate of
  dreambooth_core/training/memory/estimate.py for the same settings;
- the --memory auto plan under 16 GB and 24 GB limits (`memory_auto_plan`), run for three steps
  with the allocator capped at the limit;
- the gpu-marked pytest tests (CUDA resume bit-exactness among them), as they are and
  with deterministic kernels (`DETERMINISTIC` and gpu_determinism.py), which says
  whether exact resume on CUDA needs those settings;
then a torch.profiler top-10 of one default step. `--json PATH` writes all of it.
With `--reference .../examples/dreambooth/train_dreambooth.py` (a diffusers checkout; its
Python, `--reference-python`, needs torchvision too) it also runs diffusers' script on the
same model, resolution and steps, with prior preservation and the text encoder, and prints
its it/s and ours / reference (reference_dreambooth.py).

Not yet run on a GPU: the rows, the 8 minutes and the CUDA-only code paths are unmeasured.
Needs torch, transformers, accelerate, peft and diffusers, and pydantic (our settings),
pytest for the test row; never prefect, so it runs on a bare GPU box.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from reference_dreambooth import reference_command, run_reference, save_model_folder  # noqa: E402
from train_speed import sd15_parts, synchronize  # noqa: E402

from dreambooth_core.config import RuntimeSettings, TrainingSettings  # noqa: E402
from dreambooth_core.families import write_config_folder  # noqa: E402
from dreambooth_core.families.sd_tiny import build_tiny_model  # noqa: E402
from dreambooth_core.training.memory.estimate import estimate_training_memory  # noqa: E402
from dreambooth_core.families.family import ModelParts  # noqa: E402
from dreambooth_core.families import load_model_parts  # noqa: E402
from dreambooth_core.training.trainer import Example, Trainer  # noqa: E402

GIB = 2**30
MEMORY_LIMITS_GB = (16, 24)
# CUDA kernels that add with atomics (embedding backward, some cuDNN convolution weight
# gradients) sum in a different order each run; resume is bit-exact only without them.
DETERMINISTIC = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # plus gpu_determinism.py's switches


@dataclass(frozen=True)
class Case:
    workload: str  # "defaults" or "prior"
    channels_last: bool = False
    compile: bool = False
    optimizer: str = "adamw"
    step_in_backward: bool = False

    @property
    def options(self) -> str:
        flags = [f for f, on in (("--compile", self.compile), ("--channels-last", self.channels_last),
                                 ("--step-in-backward", self.step_in_backward)) if on]
        if self.optimizer != "adamw":
            flags.append(f"--optimizer {self.optimizer}")
        return " ".join(flags) or "plain"


CASES = [Case(w, cl, c) for w in ("defaults", "prior") for cl, c in ((False, False), (True, False), (True, True))]
CASES.append(Case("defaults", optimizer="adamw-8bit"))
CASES.append(Case("defaults", step_in_backward=True))


@dataclass
class Row:
    check: str
    setting: str
    it_per_s: float | None = None
    peak_gib: float | None = None
    estimate_gib: float | None = None
    note: str = ""


@dataclass
class Model:
    parts: ModelParts
    resolution: int
    estimate_source: str  # a model folder (configs suffice)
    estimates: dict = field(default_factory=dict)


def build_model(name: str, device: torch.device, folder: Path) -> Model:
    if name == "sd15":
        parts, resolution = sd15_parts(device, folder)  # writes the tokenizer into `folder`
        return Model(parts, resolution, str(write_config_folder("sd15", folder / "configs")))
    from dreambooth_core.families.sd_tiny import TINY_RESOLUTION

    path = build_tiny_model(folder)
    return Model(load_model_parts(str(path), device), TINY_RESOLUTION, str(path))


def settings_for(case: Case) -> TrainingSettings:
    return TrainingSettings(mixed_precision="bf16", optimizer=case.optimizer,  # the defaults otherwise
                            step_in_backward=case.step_in_backward)


def runtime_for(case: Case) -> RuntimeSettings:
    return RuntimeSettings(channels_last=case.channels_last, compile=case.compile)


def examples(resolution: int, prior: bool) -> tuple[list[Example], list[Example]]:
    pixels = torch.rand(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1
    instances = [Example(pixels, "photo of shrk person", "shrk")]
    return instances, [Example(-pixels, "photo of person", "shrk")] if prior else []


def make_trainer(model: Model, case: Case, total_steps: int) -> Trainer:
    model.parts.denoiser.to(memory_format=torch.contiguous_format)  # an earlier row may have changed it
    instances, classes = examples(model.resolution, case.workload == "prior")
    return Trainer(model.parts, instances, settings_for(case), total_steps, runtime_for(case), classes)


def skip_reason(case: Case, device: torch.device) -> str | None:
    if case.compile and device.type != "cuda":
        return "skipped on a CPU (inductor compiles C++ for minutes)"
    if case.optimizer == "adamw-8bit":
        if device.type != "cuda":
            return "skipped: bitsandbytes' 8-bit AdamW needs a CUDA GPU"
        try:
            import bitsandbytes  # noqa: F401
        except Exception as exc:  # ImportError, or a library that fails to load
            return f"skipped: bitsandbytes does not import ({type(exc).__name__}: {str(exc)[:80]})"
    return None


def speed_row(model: Model, case: Case, device: torch.device, steps: int, warmup: int) -> Row:
    row = Row("it/s", f"{case.workload}, {case.options}")
    if (reason := skip_reason(case, device)) is not None:
        row.note = reason
        return row
    release(device)
    trainer = make_trainer(model, case, warmup + steps)
    for step in range(warmup):  # compiling, autotuning, the latent cache
        trainer.step(step)
    synchronize(device)
    began = time.perf_counter()
    for step in range(warmup, warmup + steps):
        trainer.step(step)
    synchronize(device)
    row.it_per_s = round(steps / (time.perf_counter() - began), 2)
    if device.type == "cuda":
        row.peak_gib = round(torch.cuda.max_memory_allocated() / GIB, 3)
    else:
        row.note = "peak GPU memory: no GPU"
    if case.step_in_backward:
        trainer.optimizer.remove_hooks()  # the next rows train the same modules
    del trainer
    row.estimate_gib = estimate_for(model, case)
    if case.optimizer != "adamw":
        row.note = "estimate: bitsandbytes' state layout, allocated by a stand-in (8-bit AdamW needs CUDA)"
    return row


def estimate_for(model: Model, case: Case) -> float:
    """The memory estimate (fake tensors, on the CPU) of the case's workload and optimizer
    settings: neither compiling nor channels-last enters it (the estimator cannot move fake
    weights to another memory format; the layout changes no size)."""
    if case.workload not in model.estimates:
        plain = Case(case.workload)
        estimate = estimate_training_memory(model.estimate_source, settings_for(plain), model.resolution,
                                            runtime_for(plain), prior=case.workload == "prior")
        model.estimates[case.workload] = round(estimate.peak_gib, 4)
    if case.optimizer != "adamw" or case.step_in_backward:
        own = estimate_training_memory(model.estimate_source, settings_for(case), model.resolution,
                                       runtime_for(case), prior=case.workload == "prior")
        return round(own.peak_gib, 4)
    return model.estimates[case.workload]


def release(device: torch.device) -> None:
    """Let the previous row's trainer go, so each row's peak is its own."""
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def memory_auto_plan(model: Model, limit_gb: float, device: torch.device) -> Row:
    """The row for `--memory auto` under a GPU memory limit of `limit_gb` (GB): the plan the
    selection picks for the default settings with prior preservation, its estimate, and on a
    GPU three steps of that plan with the allocator capped at the limit
    (torch.cuda.set_per_process_memory_fraction): whether it fits, and its real peak."""
    from dreambooth_core.errors import ConfigError
    from dreambooth_core.training.memory.plan import choose_plan, eight_bit_available, usable_bytes

    row = Row("--memory auto plan", f"limit {limit_gb:g} GB, prior")
    case = Case("prior")

    def estimate(training, runtime) -> int:
        return estimate_training_memory(model.estimate_source, training, model.resolution, runtime, prior=True).peak_bytes

    try:
        plan = choose_plan(estimate, settings_for(case), runtime_for(case), usable_bytes(int(limit_gb * 1e9)),
                           eight_bit_available())
    except ConfigError as exc:
        row.note = f"nothing fits: {exc}"
        return row
    row.estimate_gib, row.note = round(plan.estimated_peak_bytes / GIB, 3), plan.describe()
    if device.type == "cuda":
        row.peak_gib, outcome = run_capped(model, plan, limit_gb, device)
        row.note += f"; {outcome}"
    return row


def run_capped(model: Model, plan, limit_gb: float, device: torch.device) -> tuple[float | None, str]:
    """Three training steps of `plan` with the allocator capped at `limit_gb`."""
    release(device)
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit_gb * 1e9 / total), device)
    instances, classes = examples(model.resolution, prior=True)
    training, runtime = plan.apply(settings_for(Case("prior")), runtime_for(Case("prior")))
    trainer = None
    try:
        trainer = Trainer(model.parts, instances, training, 3, runtime, classes)
        for step in range(3):
            trainer.step(step)
        synchronize(device)
        return round(torch.cuda.max_memory_allocated() / GIB, 3), "3 steps ran within the limit"
    except torch.OutOfMemoryError:
        return round(torch.cuda.max_memory_allocated() / GIB, 3), "OUT OF MEMORY within the limit"
    finally:
        del trainer
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        model.parts.denoiser.disable_gradient_checkpointing()
        model.parts.text_encoder.gradient_checkpointing_disable()
        release(device)


def gpu_tests_rows(device: torch.device) -> list[Row]:
    """The gpu-marked tests as the trainer runs (cuDNN and cuBLAS as they come), then with
    deterministic kernels: where only the second passes, bit-exact resume on CUDA needs them."""
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                   if "mark.gpu" in p.read_text())
    if device.type != "cuda":
        return [Row("pytest -m gpu", f"{len(files)} files", note=f"skipped: no CUDA device ({', '.join(files)})")]
    return [gpu_tests_row(files, deterministic=False), gpu_tests_row(files, deterministic=True)]


def gpu_tests_row(files: list[str], deterministic: bool) -> Row:
    row = Row("pytest -m gpu", f"{len(files)} files, " + ("deterministic kernels" if deterministic else "as is"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "benchmarks"), str(REPO)])}
    plugin = []
    if deterministic:
        env |= DETERMINISTIC
        plugin = ["-p", "gpu_determinism"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", *plugin, *files],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = result.stdout.strip().splitlines()
    row.note = (lines[-1] if lines else result.stderr.strip()[-200:]) + \
        ("" if result.returncode == 0 else f" (exit {result.returncode})")
    return row


def profile_top10(model: Model, device: torch.device) -> str:
    """torch.profiler's ten most expensive operators in one default step (after a warm-up step)."""
    from torch.profiler import ProfilerActivity, profile

    release(device)
    trainer = make_trainer(model, Case("defaults"), 2)
    trainer.step(0)
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        trainer.step(1)
        synchronize(device)
    if device.type != "cuda":
        return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    try:
        return profiler.key_averages().table(sort_by="self_device_time_total", row_limit=10)
    except AttributeError:  # torch before "device" replaced "cuda" in the profiler's names
        return profiler.key_averages().table(sort_by="self_cuda_time_total", row_limit=10)


def reference_row(args: argparse.Namespace, model: Model, device: torch.device, work: Path, ours: Row) -> Row:
    """diffusers' train_dreambooth.py on the same model, resolution and steps, with prior
    preservation and the text encoder, in bf16 on a GPU: its it/s beside our prior row's."""
    folder = Path(model.estimate_source) if args.model == "tiny" else save_model_folder(model.parts, work / "saved")
    model.parts = None  # our model leaves the GPU before the reference loads its own
    release(device)
    command = reference_command(args.reference_python, args.reference, folder, work, model.resolution,
                                args.warmup + args.steps, prior=True,
                                precision="bf16" if device.type == "cuda" else "no")
    row = Row("reference", "prior, train_dreambooth.py")
    try:
        reference = run_reference(command, timeout=args.reference_timeout)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        row.note = f"failed: {str(exc)[-300:]}".replace("|", "/").replace("\n", " ")
        return row
    row.it_per_s = round(reference.it_per_s, 2)
    row.note = (f"ours (prior, plain) / reference = {ours.it_per_s / row.it_per_s:.2f}; "
                f"its whole run {reference.seconds:.0f} s")
    return row


def table(rows: list[Row]) -> str:
    def cell(value) -> str:
        return "" if value is None else str(value)

    lines = ["| check | setting | it/s | peak GiB | estimate GiB | note |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.check} | {r.setting} | {cell(r.it_per_s)} | {cell(r.peak_gib)} | {cell(r.estimate_gib)} "
              f"| {r.note} |" for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dreambooth-gpu-check-") as work:
        model = build_model(args.model, device, Path(work) / "model")
        if args.resolution:
            model.resolution = args.resolution
        rows = []
        for case in CASES:
            rows.append(speed_row(model, case, device, args.steps, args.warmup))
            print(f"[{time.perf_counter() - began:.0f} s] {rows[-1]}", file=sys.stderr, flush=True)  # a partial result
        profile = profile_top10(model, device)
        rows += [memory_auto_plan(model, limit, device) for limit in MEMORY_LIMITS_GB]
        if args.reference:
            rows.append(reference_row(args, model, device, Path(work), next(r for r in rows if r.setting ==
                                                                              "prior, plain")))
    rows += gpu_tests_rows(device)
    return {"model": args.model, "resolution": model.resolution, "device": str(device),
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "steps": args.steps, "precision": "bf16",
            "rows": [asdict(r) for r in rows], "profile": profile,
            "seconds": round(time.perf_counter() - began, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["sd15", "tiny"], default="sd15")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, help="timed steps per row (default: 20 on CUDA, 3 on a CPU)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compiling happens here)")
    parser.add_argument("--resolution", type=int, help="image size (default: the model's own)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--reference", type=Path, help="diffusers' examples/dreambooth/train_dreambooth.py: "
                        "run it on the same model and print its it/s beside ours")
    parser.add_argument("--reference-python", default=sys.executable, help="the Python that runs it (with "
                        "diffusers, transformers, accelerate and torchvision; default: this one)")
    parser.add_argument("--reference-timeout", type=float, default=600, help="seconds (default: 600)")
    args = parser.parse_args(argv)
    if args.reference and not args.reference.is_file():
        sys.exit(f"--reference {args.reference}: no such file (diffusers' examples/dreambooth/train_dreambooth.py)")
    args.steps = args.steps or (20 if args.device.startswith("cuda") else 3)
    results = run(args)
    print(f"gpu_check: {results['model']} at {results['resolution']} px on {results['gpu']} ({results['device']}), "
          f"torch {results['torch']}, {results['precision']}, {results['steps']} timed steps per row\n")
    print(table([Row(**r) for r in results["rows"]]))
    print(f"\ntorch.profiler, one default step, top 10:\n{results['profile']}")
    print(f"gpu_check took {results['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
