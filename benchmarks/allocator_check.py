"""The memory estimate against what a real allocator hands out, on the CPU.

    python benchmarks/allocator_check.py                       # SD 1.5: LoRA, LoRA + checkpointing, textual inversion
    python benchmarks/allocator_check.py --model sd15 --plans "lora rank 8, prior" --resolution 384

The estimate (dreambooth_core/training/memory/estimate.py) counts the bytes of live tensor
storage over real training steps on fake tensors. Here the same steps run on real tensors in a
child process whose glibc allocator maps every block of 64 KiB or more on its own and returns it
when freed (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_): the process's anonymous memory then
follows the live tensor bytes, and its peak over the steps, less what the process held before
the model was built, is what the allocator really handed out. A thread samples it every
millisecond from /proc/self/statm. Each row also gives the estimator's own count on those real
tensors. Full-size models on the CPU (fp32, no autocast): SD 1.5 LoRA needs about 10 GB of RAM.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from memory_estimate import PLANS, plan_name  # noqa: E402

GIB = 2**30
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024), "MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_TOP_PAD_": "0"}
DEFAULT_PLANS = ("lora rank 8, prior", "lora rank 8, prior, checkpointing", "textual inversion")


class AnonymousPeak:
    """The most anonymous memory (resident less file-backed pages) this process held while running."""

    def __init__(self, every: float = 0.001):
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def now() -> int:
        resident, shared = map(int, Path("/proc/self/statm").read_text().split()[1:3])
        return (resident - shared) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.every)

    def __enter__(self) -> AnonymousPeak:
        self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def settings_of(plan: str):
    from dreambooth_core.config import RuntimeSettings, TrainingSettings

    training, runtime, prior = PLANS[plan]
    return TrainingSettings(steps=10, mixed_precision="no", **training), RuntimeSettings(**runtime), prior


def measure_in_this_process(folder: str, plan: str, resolution: int) -> dict:
    """Real training steps of `plan`: the allocator's peak above the baseline, and the estimator's count."""
    from dreambooth_core.training.memory.estimate import estimate_training_memory

    training, runtime, prior = settings_of(plan)
    baseline = AnonymousPeak.now()
    with AnonymousPeak() as sampled:
        counted = estimate_training_memory(folder, training, resolution, runtime, prior, fake=False)
    return {"allocator_bytes": sampled.peak - baseline, "counted_bytes": counted.peak_bytes,
            "baseline_bytes": baseline}


def measure(folder: Path, plan: str, resolution: int) -> dict:
    """In a child process with the allocator set as the module's docstring says."""
    result = subprocess.run([sys.executable, __file__, "--child", str(folder), plan, str(resolution)],
                            env={**os.environ, **ALLOCATOR}, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"measuring {plan!r} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        folder, plan, resolution = sys.argv[2:5]
        print(json.dumps(measure_in_this_process(folder, plan, int(resolution))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sd15", choices=["sd15", "sd21-512", "sd21-768-v", "sdxl"])
    parser.add_argument("--plans", nargs="+", default=list(DEFAULT_PLANS), type=plan_name, choices=list(PLANS),
                        metavar="PLAN")
    parser.add_argument("--resolution", type=int, help="default: the model's own")
    args = parser.parse_args()
    from dreambooth_core.families import detect_family
    from dreambooth_core.families import write_config_folder
    from dreambooth_core.training.memory.estimate import estimate_training_memory

    print("| model | plan (fp32, batch 1) | estimate GiB | estimator on real tensors GiB | allocator GiB "
          "| estimate / allocator | baseline GiB |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_config_folder(args.model, Path(tmp) / args.model)
        resolution = args.resolution or detect_family(folder).resolution
        for plan in args.plans:
            training, runtime, prior = settings_of(plan)
            estimate = estimate_training_memory(folder, training, resolution, runtime, prior).peak_bytes
            real = measure(folder, plan, resolution)
            print(f"| {args.model} ({resolution} px) | {plan} | {estimate / GIB:.2f} | "
                  f"{real['counted_bytes'] / GIB:.2f} | {real['allocator_bytes'] / GIB:.2f} | "
                  f"{estimate / real['allocator_bytes']:.3f} | {real['baseline_bytes'] / GIB:.2f} |", flush=True)


if __name__ == "__main__":
    main()
