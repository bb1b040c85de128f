"""The GPU training path, proven on a machine without a GPU: every family x method x precision.

    python benchmarks/cuda_dry_run.py                       # every case (about half an hour on 2 cores)
    python benchmarks/cuda_dry_run.py --cases sdxl lora     # the cases whose name holds every word
    python benchmarks/cuda_dry_run.py --cases flux1-dev     # one model's cases

Run it with PyPI's CUDA build of torch (`./setup.sh --cuda-dry-run` makes `.cuda-venv`); it
builds the fake CUDA runtime of ../shared/fakecuda (FAKECUDA_SOURCE) and restarts itself on it.

Each case builds the full-size model from its published configs on fake tensors (no weights, no
download): SD 1.5, SD 2.1 768 px v-prediction, SDXL, FLUX.1 [dev] and [schnell] and FLUX.2
[klein] base 4B, each at the resolution its configs give, with the methods its family trains
(what it refuses, e.g. textual inversion or min-SNR for the flow families, is no case). It hands
it to the project's own `Trainer` on device `cuda` as a chunk does (parts on the CPU, cast and
moved by the Trainer), and trains two steps with `train_steps`, the loop every chunk runs. It
fails on a tensor on the wrong device, a dtype a real kernel refuses, a CUDA index into a CPU
tensor and any host sync inside a step (fake_cuda.py), and then checks what a step leaves: trained
weights as fp32 masters on the GPU, gradients freed, optimizer state and EMA on the GPU, frozen
weights in the precision they are held in, text encoders that no step trains in host memory (the
rest on the GPU), and a checkpoint's host copy; with --offload, every block's weights and optimizer
state back on the host (none left in flight) and the rest on the GPU. The fake runtime makes no
streams and no page-locked memory: offload's copy stream is the current stream there, its host
copies are pageable, and its copies queued without waiting (non_blocking) are not counted as host
syncs.
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

STEPS = 2  # trained per case; the text-encoder phase is the first

# The models of the matrix: published architectures (dreambooth_core.families.ARCHITECTURES), built
# from their configs and trained at the resolution their configs give (detect_family), and for
# --tiny the built-in tiny models (TINY_MODELS): for the dry run's own tests.
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
    "min-snr": ({"min_snr_gamma": 5.0}, {}),
    "offset+flip": ({"offset_noise": 0.1, "flip": True}, {}),
    "batch-2x2": ({"batch_size": 2, "gradient_accumulation": 2}, {}),
    "channels-last": ({}, {"channels_last": True}),
    "t4": ({}, {}),  # --mixed-precision auto on a GPU without bf16 (sm_75)
    # A quantised frozen base (torchao weight-only, quantised on the fake tensors as they are built).
    # nf4 (bitsandbytes) is no case: it quantises as it loads onto a real GPU, with its own kernels.
    "int8-base": ({"base_precision": "int8"}, {}),
    "fp8-base": ({"base_precision": "fp8"}, {}),
    "offload": ({"step_in_backward": True}, {"offload": True}),  # blocks on the host between their passes
}
# (method, precision, options): each memory and training option, beside the method x precision matrix.
OPTION_CASES = (
    ("dreambooth", "bf16", ("prior", "checkpointing")),
    ("dreambooth", "fp16", ("prior", "checkpointing", "adamw-8bit")),
    ("dreambooth", "bf16", ("prior", "checkpointing", "adamw-8bit", "step-in-backward")),
    ("dreambooth", "bf16", ("no-text-encoder", "step-in-backward", "ema")),
    ("dreambooth", "auto", ("prior", "t4")),
    ("lora", "bf16", ("prior", "checkpointing", "text-encoder")),
    ("lora", "fp16", ("text-encoder", "ema", "adamw-8bit")),
    ("textual-inversion", "bf16", ("checkpointing", "min-snr", "offset+flip")),
    ("dreambooth", "bf16", ("prior", "batch-2x2", "min-snr", "offset+flip", "channels-last")),
    ("lora", "bf16", ("int8-base", "prior", "checkpointing", "text-encoder")),
    ("textual-inversion", "fp16", ("fp8-base", "offset+flip")),
    ("dreambooth", "bf16", ("prior", "offload")),
    ("dreambooth", "bf16", ("prior", "checkpointing", "adamw-8bit", "offload")),
)
# The 1024 px transformers take a minute or more a case on 2 cores: fewer cases, each with more options.
FEW_OPTION_CASES = (
    ("dreambooth", "bf16", ("prior", "checkpointing", "adamw-8bit", "step-in-backward")),
    ("dreambooth", "auto", ("prior", "t4")),
    ("lora", "bf16", ("prior", "checkpointing", "text-encoder")),
    ("lora", "fp16", ("text-encoder", "ema", "adamw-8bit")),
    ("lora", "bf16", ("prior", "batch-2x2", "min-snr", "offset+flip")),
    ("lora", "bf16", ("int8-base", "prior", "checkpointing")),
    ("lora", "bf16", ("fp8-base", "text-encoder")),
    ("dreambooth", "bf16", ("prior", "checkpointing", "adamw-8bit", "offload")),
)


@dataclass(frozen=True)
class Model:
    """A model of the matrix: its methods (those its family trains) at `precisions`, with prior
    preservation, then `option_cases` (an option its family refuses or has no use for is left out)."""

    name: str  # a key of ARCHITECTURES or of TINY_MODELS
    precisions: tuple[str, ...] = PRECISIONS
    option_cases: tuple = OPTION_CASES


FULL_SIZE = (Model("sd15"), Model("sd21-768-v"), Model("sdxl"),
             Model("flux1-dev", option_cases=FEW_OPTION_CASES),
             Model("flux1-schnell", precisions=("bf16",), option_cases=()),  # [dev] less its guidance input
             Model("flux2-klein-base-4b", option_cases=FEW_OPTION_CASES))
TINY = (Model("tiny"), Model("tiny-sdxl"), Model("tiny-flux"),
        Model("tiny-flux-schnell", precisions=("bf16",), option_cases=()), Model("tiny-klein"))


@dataclass(frozen=True)
class Case:
    model: str  # a key of ARCHITECTURES or TINY_MODELS
    method: str
    precision: str
    options: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return " ".join([self.model, self.method, self.precision, *self.options])

    def settings(self):
        from dreambooth_core.config import RuntimeSettings, TrainingSettings

        training = {"method": self.method, "mixed_precision": self.precision, "text_encoder_steps": 1}
        runtime = {}
        for option in self.options:
            training |= OPTIONS[option][0]
            runtime |= OPTIONS[option][1]
        return TrainingSettings(**training), RuntimeSettings(device="cuda", **runtime)


def all_cases(models=FULL_SIZE) -> list[Case]:
    """The method x precision matrix with prior preservation (the defaults otherwise, the text
    encoder trained for the first step), then each memory and training option."""
    cases = [Case(m.name, method, p, ("prior",)) for m in models for method in METHODS
             if trains(m.name, method) for p in m.precisions]
    for model in models:
        for method, precision, options in model.option_cases:
            kept = tuple(o for o in options if applies(model.name, method, o))
            case = Case(model.name, method, precision, kept)
            if trains(model.name, method) and case not in cases:
                cases.append(case)
    return cases


def family_of_model(name: str):
    """The family of a published architecture or a tiny model, from the registry."""
    from dreambooth_core.families import FAMILIES

    return next(family for family in FAMILIES
                if name in {a.name for a in family.architectures} | {t.spec for t in family.tiny_models})


def trains(model: str, method: str) -> bool:
    return _accepted(model, {"method": method})


def applies(model: str, method: str, option: str) -> bool:
    """Whether the family takes the option: it does not refuse it, and a LoRA on the text encoders
    has a text encoder that trains."""
    if option == "text-encoder" and not family_of_model(model).trainable_text_encoders:
        return False
    return _accepted(model, {"method": method, **OPTIONS[option][0]})


def _accepted(model: str, training: dict) -> bool:
    from dreambooth_core.config import TrainingSettings
    from dreambooth_core.errors import ConfigError

    try:
        family_of_model(model).check_settings(TrainingSettings(**training))
    except ConfigError:
        return False
    return True


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

    from dreambooth_core.training.trainer import Example, Trainer

    from dreambooth_core.families import detect_family, load_model_parts
    from dreambooth_core.families.quantised import BasePrecision
    from dreambooth_core.training.devices import resolve_precision

    training, runtime = case.settings()
    resolution = detect_family(folder).resolution
    pixels = torch.zeros(1, 3, resolution, resolution)
    examples = [Example(pixels, f"a photo of shrk{i} person", f"shrk{i}") for i in range(2)]
    classes = [Example(pixels, "a photo of a person", f"shrk{i}") for i in range(2)] if "prior" in case.options else []
    base = BasePrecision(training.base_precision, resolve_precision(training.mixed_precision, torch.device("cuda")))
    parts = load_model_parts(folder, torch.device("cpu"), weights=False, base=base)
    return Trainer(parts, examples, training, total_steps=2, runtime=runtime,
                   class_examples=classes, device=torch.device("cuda"))


def _train_two_steps(trainer) -> None:
    from dreambooth_core.training.chunk import train_steps

    train_steps(trainer, 0, STEPS, monitor=None, after_step=None)


def state_checks(trainer) -> list[str]:
    """What two steps leave behind, checked; raises AssertionError naming what is wrong."""
    import torch

    from dreambooth_core.families.quantised import QUANTISED, is_quantised_weight
    from dreambooth_core.training.memory.frozen_weights import HELD_IN_HALF, frozen_dtype
    from dreambooth_core.training.methods import text_encoders_stay_on_device

    named = trainer.trainables.named()
    assert named, "the method trains nothing"
    # Text encoders wait in host memory once no step needs them: from the start when none trains
    # (their captions encoded once, on the GPU), else once the text-encoder phase has ended.
    stays = text_encoders_stay_on_device(trainer.settings, trainer.family, trainer.runtime)
    in_phase = trainer.text_encoder_trains_at(STEPS) or not trainer.trainables.text_side
    encoders_at = "cuda" if stays and in_phase else "cpu"
    text_side = trainer.trainables.text_side
    hosted = _offloaded(trainer)
    for name, parameter in named.items():
        where = "cpu" if id(parameter) in hosted else encoders_at if name in text_side else "cuda"
        assert parameter.device.type == where, f"trained weight {name} is on {parameter.device}, not {where}"
        assert parameter.dtype == torch.float32, f"trained weight {name} is {parameter.dtype}, not an fp32 master"
        assert parameter.grad is None, f"trained weight {name} still holds a gradient after the step"
    for parameter, state in _optimizer_states(trainer.optimizer):
        home = "cpu" if id(parameter) in hosted else "cuda"
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0:
                assert value.device.type == home, f"optimizer state {key} is on {value.device}, not {home}"
    if trainer.settings.ema_decay:
        assert trainer.ema, "EMA is on but averages nothing"
        assert trainer.ema.keys() == trainer.trainables.denoiser.keys(), "EMA does not cover the trained UNet weights"
        assert all(v.device.type == "cuda" and v.dtype == torch.float32 for v in trainer.ema.values()), \
            "EMA copies are not fp32 on the GPU"
    held = frozen_dtype(trainer.precision, trainer.settings.base_precision)
    trained = {id(p) for p in named.values()}
    quantised = 0
    placed = [(trainer.parts.denoiser, "cuda"), *((e, encoders_at) for e in trainer.parts.text_encoders)]
    for module, where in placed:
        for layer_name, layer in module.named_modules():
            if isinstance(layer, HELD_IN_HALF):
                for parameter in layer.parameters(recurse=False):
                    if id(parameter) in hosted:
                        continue
                    assert parameter.device.type == where, \
                        f"frozen {type(module).__name__} {layer_name} is on {parameter.device}, not {where}"
                    if is_quantised_weight(parameter):
                        quantised += 1
                    elif id(parameter) not in trained:
                        assert parameter.dtype == held, f"frozen {layer_name} is {parameter.dtype}, not {held}"
    assert bool(quantised) == (trainer.settings.base_precision in QUANTISED), \
        f"{quantised} quantised weights with --base-precision {trainer.settings.base_precision}"
    with trainer.text_encoders_for_rendering():  # samples and evaluations render with them on the GPU
        assert _devices(trainer.parts.text_encoders) == {"cuda"}, "samples would render with encoders on the host"
    assert _devices(trainer.parts.text_encoders) == {encoders_at}, f"rendering left the encoders off {encoders_at}"
    writers = trainer.state_writers()  # the checkpoint's host copy, taken as a commit takes it
    checked = [f"{len(named)} trained tensors", f"optimizer {type(trainer.optimizer).__name__}",
               f"text encoders on {encoders_at}",
               f"frozen in {str(held).removeprefix('torch.')}" + (f", {quantised} quantised" if quantised else ""),
               f"checkpoint files {', '.join(sorted(writers))}"]
    if trainer.offload is not None:
        assert hosted and not any(u.weights_in or u.state_in for u in trainer.offload.units), \
            "a block is still on the GPU after the step"
        checked.append(f"{len(hosted)} trained tensors in {len(trainer.offload.units)} blocks on the host")
    return checked


def _devices(modules) -> set[str]:
    return {p.device.type for module in modules for p in module.parameters()}


def _offloaded(trainer) -> set[int]:
    """The weights --offload keeps on the host between steps (ids)."""
    if trainer.offload is None:
        return set()
    return {id(p) for unit in trainer.offload.units for p in unit.parameters}


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
    - "t4": the GPU reports sm_75 without bf16, as a T4 does;
    - "offload": its copy stream is the current stream, its host copies pageable (see the docstring),
      and a weight pointed at other memory is told its device, as fake_module_moves does."""

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
        if "offload" in self.case.options:
            import torch

            from dreambooth_core.training.memory import offload

            # The fake runtime creates no stream (cudaStreamCreateWithPriority is not in it) and
            # refuses page-locked memory, which fake tensors cannot have either.
            self._set(offload, "copy_stream", lambda device: torch.cuda.current_stream(device))
            self._set(offload, "host_tensor", lambda like, device: torch.empty_like(like, device="cpu"))
            self._set(offload, "place", fake_cuda.place_fake)
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


def model_folder(model: str, work: Path) -> Path:
    """The diffusers folder of a tiny model (built) or of a published architecture (its configs)."""
    from dreambooth_core.families import TINY_MODELS, write_config_folder

    folder = work / model
    if not folder.exists():
        if model in TINY_MODELS:
            TINY_MODELS[model].build(folder)
        else:
            write_config_folder(model, folder)
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
    models = TINY if args.tiny else FULL_SIZE
    cases = select(all_cases(models), args.cases)
    if not cases:
        raise SystemExit(f"no case has every word of {args.cases}; cases look like "
                         f"{all_cases(models)[0].name!r}")
    results = []
    with tempfile.TemporaryDirectory(prefix="dreambooth-dry-run-") as work:
        for case in cases:
            results.append(run_case(case, model_folder(case.model, Path(work))))
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
