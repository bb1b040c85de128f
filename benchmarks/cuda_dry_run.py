"""The GPU training path, proven on a machine without a GPU: every family x method x precision.

    python benchmarks/cuda_dry_run.py                       # every case (a few minutes on 2 cores)
    python benchmarks/cuda_dry_run.py --cases sdxl lora     # the cases whose name holds every word

Run it with PyPI's CUDA build of torch (`./setup.sh --cuda-dry-run` makes `.cuda-venv`); it
builds the fake CUDA runtime of ../shared/fakecuda (FAKECUDA_SOURCE) and restarts itself on it.

Each case builds the full-size model from its published configs on fake tensors (no weights, no
download), hands it to the project's own `Trainer` on device `cuda` as a chunk does (parts on the
CPU, cast and moved by the Trainer), and trains two steps with `train_steps`, the loop every
chunk runs. It fails on a tensor on the wrong device, a dtype a real kernel refuses, a CUDA index
into a CPU tensor and any host sync inside a step (fake_cuda.py), and then checks what a step
leaves: trained weights as fp32 masters on the GPU, gradients freed, optimizer state and EMA on
the GPU, frozen weights in the precision they are held in, and a checkpoint's host copy.
It prints one row per case (passed, or the fault with the project frame that raised it, and the
seconds it took) and exits 1 on any fault.

What it does not prove: anything a kernel computes (numerics, NaNs, speed, real memory,
bitsandbytes' kernels, NCCL). Two things are left out of the loop by design and tested on real
tensors instead: the finiteness check every 50 steps and the loss log, which read values back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import fake_cuda  # noqa: E402

FAMILIES = {"sd15": 512, "sd21-768-v": 768, "sdxl": 1024}  # published configs, at their resolution
TINY = {"tiny": 64, "tiny-sdxl": 64}  # the built-in tiny models: for the dry run's own tests
METHODS = ("dreambooth", "lora", "textual-inversion")
PRECISIONS = ("no", "fp16", "bf16")
# Each option: (training settings, runtime settings) it changes.
OPTIONS = {
    "prior": ({}, {}),  # class images beside the instance images
    "checkpointing": ({}, {"gradient_checkpointing": True}),
    "adamw-8bit": ({"optimizer": "adamw-8bit"}, {}),
    "step-in-backward": ({"step_in_backward": True}, {}),
    "ema": ({"ema_decay": 0.999}, {}),
    "text-encoder": ({"lora_text_encoder": True}, {}),  # LoRA: adapters on the encoders (dreambooth: always)
    "no-text-encoder": ({"text_encoder_steps": 0}, {}),
    "min-snr+offset+flip": ({"min_snr_gamma": 5.0, "offset_noise": 0.1, "flip": True}, {}),
    "batch-2x2": ({"batch_size": 2, "gradient_accumulation": 2}, {}),
    "channels-last": ({}, {"channels_last": True}),
    "t4": ({}, {}),  # --mixed-precision auto on a GPU without bf16 (sm_75)
}


@dataclass(frozen=True)
class Case:
    family: str
    method: str
    precision: str
    options: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return " ".join([self.family, self.method, self.precision, *self.options])

    def settings(self):
        from dreambooth_core.config import RuntimeSettings, TrainingSettings

        training = {"method": self.method, "mixed_precision": self.precision, "text_encoder_steps": 1}
        runtime = {}
        for option in self.options:
            training |= OPTIONS[option][0]
            runtime |= OPTIONS[option][1]
        return TrainingSettings(**training), RuntimeSettings(device="cuda", **runtime)


def all_cases(families=tuple(FAMILIES)) -> list[Case]:
    """The family x method x precision matrix with prior preservation (the defaults otherwise,
    the text encoder trained for the first step), then each memory and training option."""
    cases = [Case(f, m, p, ("prior",)) for f in families for m in METHODS for p in PRECISIONS]
    for family in families:
        cases += [Case(family, "dreambooth", "bf16", ("prior", "checkpointing")),
                  Case(family, "dreambooth", "fp16", ("prior", "checkpointing", "adamw-8bit")),
                  Case(family, "dreambooth", "bf16", ("prior", "checkpointing", "adamw-8bit", "step-in-backward")),
                  Case(family, "dreambooth", "bf16", ("no-text-encoder", "step-in-backward", "ema")),
                  Case(family, "dreambooth", "auto", ("prior", "t4")),
                  Case(family, "lora", "bf16", ("prior", "checkpointing", "text-encoder")),
                  Case(family, "lora", "fp16", ("text-encoder", "ema", "adamw-8bit")),
                  Case(family, "textual-inversion", "bf16", ("checkpointing", "min-snr+offset+flip")),
                  Case(family, "dreambooth", "bf16", ("prior", "batch-2x2", "min-snr+offset+flip", "channels-last"))]
    return cases


@dataclass
class Result:
    case: str
    passed: bool
    seconds: float
    fault: str = ""
    kind: str = ""
    frame: str = ""
    checked: list[str] = field(default_factory=list)
    known_syncs: list[str] = field(default_factory=list)  # fake_cuda.KNOWN_SYNCS met in the step


def run_case(case: Case, folder: Path) -> Result:
    """Two training steps of `case` on fake CUDA tensors; the fault it ends in, if any."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    began = time.perf_counter()
    checks = fake_cuda.KernelChecks()
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), checks, fake_cuda.fake_module_moves(), \
                _project_patches(case, checks):
            trainer = _build_trainer(case, folder)
            _train_two_steps(trainer)
            checked = state_checks(trainer)
        result = Result(case.name, True, 0.0, checked=checked, known_syncs=sorted(checks.known_syncs))
    except Exception as exc:  # every fault is the case's result, with where it was raised
        fault = fake_cuda.classify(exc)
        result = Result(case.name, False, 0.0, fault.message, fault.kind, fault.frame)
    result.seconds = round(time.perf_counter() - began, 1)
    return result


def _build_trainer(case: Case, folder: Path):
    """As chunk.build_trainer does: parts loaded on the CPU, the Trainer told the device."""
    import torch

    from dreambooth_core.training.memory_estimate import build_parts
    from dreambooth_core.training.trainer import Example, Trainer

    training, runtime = case.settings()
    resolution = {**FAMILIES, **TINY}[case.family]
    pixels = torch.zeros(1, 3, resolution, resolution)
    examples = [Example(pixels, f"a photo of shrk{i} person", f"shrk{i}") for i in range(2)]
    classes = [Example(pixels, "a photo of a person", f"shrk{i}") for i in range(2)] if "prior" in case.options else []
    return Trainer(build_parts(folder), examples, training, total_steps=2, runtime=runtime,
                   class_examples=classes, device=torch.device("cuda"))


def _train_two_steps(trainer) -> None:
    from dreambooth_core.training.chunk import train_steps

    train_steps(trainer, 0, 2, monitor=None, after_step=None)


def state_checks(trainer) -> list[str]:
    """What two steps leave behind, checked; raises AssertionError naming what is wrong."""
    import torch

    from dreambooth_core.training.frozen_weights import HELD_IN_HALF, frozen_dtype

    named = trainer.trainables.named()
    assert named, "the method trains nothing"
    for name, parameter in named.items():
        assert parameter.device.type == "cuda", f"trained weight {name} is on {parameter.device}"
        assert parameter.dtype == torch.float32, f"trained weight {name} is {parameter.dtype}, not an fp32 master"
        assert parameter.grad is None, f"trained weight {name} still holds a gradient after the step"
    for parameter, state in _optimizer_states(trainer.optimizer):
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0:
                assert value.device.type == "cuda", f"optimizer state {key} is on {value.device}"
    if trainer.settings.ema_decay:
        assert trainer.ema, "EMA is on but averages nothing"
        assert trainer.ema.keys() == trainer.trainables.denoiser.keys(), "EMA does not cover the trained UNet weights"
        assert all(v.device.type == "cuda" and v.dtype == torch.float32 for v in trainer.ema.values()), \
            "EMA copies are not fp32 on the GPU"
    held = frozen_dtype(trainer.precision)
    trained = {id(p) for p in named.values()}
    for module in (trainer.parts.denoiser, *trainer.parts.text_encoders):
        for layer_name, layer in module.named_modules():
            if isinstance(layer, HELD_IN_HALF):
                for parameter in layer.parameters(recurse=False):
                    assert parameter.device.type == "cuda", f"frozen {layer_name} is on {parameter.device}"
                    if id(parameter) not in trained:
                        assert parameter.dtype == held, f"frozen {layer_name} is {parameter.dtype}, not {held}"
    writers = trainer.state_writers()  # the checkpoint's host copy, taken as a commit takes it
    return [f"{len(named)} trained tensors", f"optimizer {type(trainer.optimizer).__name__}",
            f"frozen in {str(held).removeprefix('torch.')}", f"checkpoint files {', '.join(sorted(writers))}"]


def _optimizer_states(optimizer):
    inner = getattr(optimizer, "optimizers", [optimizer])  # StepInBackward holds one per weight
    return [(p, s) for o in inner for p, s in o.state.items()]


class _project_patches:
    """`Trainer.step` marked as the step (where host syncs are faults); and what a fake tensor
    cannot do, done otherwise, each for a stated reason:
    - the batch draw picks examples by reading random values on the CPU: it runs on real tensors;
    - bitsandbytes builds its quantization map from real values when an optimizer is made;
    - the finiteness check (every 50 steps and at the chunk's end) finds the first bad step with
      `nonzero`, whose size a fake tensor cannot know: it is tested on real tensors;
    - "t4": the GPU reports sm_75 without bf16, as a T4 does."""

    def __init__(self, case: Case, checks: fake_cuda.KernelChecks):
        self.case, self.checks, self.undo = case, checks, []

    def __enter__(self):
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        from dreambooth_core.training import chunk, trainer

        def on_real_tensors(function):
            def run(*args, **kwargs):
                with unset_fake_temporarily():
                    return function(*args, **kwargs)
            return run

        self._set(trainer.Trainer, "step", fake_cuda.marking_the_step(trainer.Trainer.step, self.checks))
        self._set(trainer, "draw_micro_batch", on_real_tensors(trainer.draw_micro_batch))
        self._set(chunk, "check_finite", lambda *args, **kwargs: None)
        try:
            import bitsandbytes.functional as bnb_functional
        except Exception:  # bitsandbytes missing or failing to load: the 8-bit cases say so
            bnb_functional = None
        if bnb_functional is not None:
            self._set(bnb_functional, "create_dynamic_map", on_real_tensors(bnb_functional.create_dynamic_map))
        if "t4" in self.case.options:
            import torch

            self._set(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
            self._set(torch.cuda, "get_device_capability", lambda *args, **kwargs: (7, 5))
        return self

    def _set(self, owner, name, value) -> None:
        self.undo.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def __exit__(self, *exc):
        for owner, name, value in reversed(self.undo):
            setattr(owner, name, value)
        return False


def model_folder(family: str, work: Path) -> Path:
    from dreambooth_core.families import write_config_folder
    from dreambooth_core.families.sd_tiny import build_tiny_model, build_tiny_sdxl_model

    folder = work / family
    if not folder.exists():
        if family in TINY:
            (build_tiny_model if family == "tiny" else build_tiny_sdxl_model)(folder)
        else:
            write_config_folder(family, folder)
    return folder


def select(cases: list[Case], words: list[str]) -> list[Case]:
    return [c for c in cases if all(w in c.name.split() for w in words)]


def table(results: list[Result]) -> str:
    lines = ["| case | result | seconds |", "|---|---|---|"]
    for r in results:
        outcome = "passed" + "".join(f" ({why})" for why in r.known_syncs) if r.passed \
            else f"**{r.kind}**: {r.fault} ({r.frame})".replace("|", "/")
        lines.append(f"| {r.case} | {outcome} | {r.seconds} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[Result]:
    for replacement in args.replace_module:
        name, _, path = replacement.partition("=")
        fake_cuda.replace_module(name, Path(path))
    from dreambooth_core.families.family import import_model_classes

    list(import_model_classes())
    families = tuple(TINY) if args.tiny else tuple(FAMILIES)
    cases = select(all_cases(families), args.cases)
    if not cases:
        raise SystemExit(f"no case has every word of {args.cases}; cases look like {all_cases(families)[0].name!r}")
    results = []
    with tempfile.TemporaryDirectory(prefix="dreambooth-dry-run-") as work:
        for case in cases:
            results.append(run_case(case, model_folder(case.family, Path(work))))
            r = results[-1]
            print(f"[{r.seconds:5.1f} s] {r.case}: " + ("passed" if r.passed else f"{r.kind}: {r.fault} at {r.frame}"),
                  file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=[], help="run only the cases whose name holds every word")
    parser.add_argument("--tiny", action="store_true", help="the built-in tiny models instead of the full-size "
                        "ones (seconds; what the dry run's own tests use)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--replace-module", action="append", default=[], metavar="NAME=PATH",
                        help="import PATH as the project module NAME (a copy with an injected fault)")
    args = parser.parse_args(argv)
    if not fake_cuda.on_fake_cuda():
        try:
            environment = fake_cuda.fake_cuda_environment()
        except RuntimeError as exc:
            sys.exit(f"cuda_dry_run: {exc}")
        os.execve(sys.executable, [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)], environment)
    began = time.perf_counter()
    results = run(args)
    failed = [r for r in results if not r.passed]
    print(table(results))
    print(f"\n{len(results) - len(failed)} of {len(results)} cases passed in {time.perf_counter() - began:.0f} s "
          f"(torch {__import__('torch').__version__}, fake CUDA device)")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    fake_cuda.exit_now(1 if failed else 0)


if __name__ == "__main__":
    main()
