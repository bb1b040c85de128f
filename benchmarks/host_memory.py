"""Peak host memory of a full-size `dreambooth train` run on this machine's CPU, optionally
inside a memory limit like a small VM's (a free Colab runtime has 12.7 GB).

    python benchmarks/host_memory.py --steps 2 --chunk-steps 1                    # SD 1.5 DreamBooth
    python benchmarks/host_memory.py --model sdxl --method lora --steps 1 --memory-limit 12.7 \
        --mixed-precision bf16 --gradient-checkpointing    # flags it does not know go to the CLI

Writes the full architecture with random weights (its published configs; nothing is
downloaded) as a diffusers folder, then runs the CLI on the example photos (enlarged to 1.25x the
training size) with the tiny tokenizer, and reports for the run's processes together:

- peak RSS (getrusage of the children), which counts the model files' pages that the
  kernel maps in from disk and can drop again under pressure;
- peak anonymous memory (RSS less file-backed pages, sampled every 0.2 s): what a VM must
  really hold;
- with `--memory-limit GB`: whether the run finished inside a Linux memory cgroup of that
  size (the kernel kills a process that needs more, as a small VM does; needs permission
  to create cgroups, e.g. root).

On a CPU the training state and activations live in host memory; on a GPU they do not, so
these figures are an upper bound for the host side of a GPU run (`--device cuda` measures it). `--method` picks what
trains; DreamBooth of SD 1.5 needs about 20 GB: run nothing heavy beside it.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dreambooth_core.training.memory.estimate import write_random_model  # noqa: E402

CGROUP_ROOTS = (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup"))  # v1, v2


def enlarged_photos(folder: Path, size: int) -> Path:
    """The example photos with their short side at `size` px (they are smaller than training sizes)."""
    from PIL import Image

    folder.mkdir()
    for photo in sorted((REPO / "examples" / "photos").glob("*.jpg")):
        with Image.open(photo) as image:
            scale = size / min(image.size)
            image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)),
                                        Image.LANCZOS).save(folder / photo.name, quality=95)
    return folder


class MemoryCgroup:
    """A memory cgroup of `limit` bytes (v1 or v2, whichever this machine mounts)."""

    def __init__(self, limit: int):
        root = next((r for r in CGROUP_ROOTS if (r / "cgroup.procs").exists()
                     and (r.name == "memory" or (r / "cgroup.controllers").exists())), None)
        if root is None:
            sys.exit("--memory-limit needs a mounted memory cgroup (/sys/fs/cgroup)")
        self.path = root / f"dreambooth-host-memory-{os.getpid()}"
        self.v1 = root.name == "memory"
        try:
            self.path.mkdir()
            (self.path / ("memory.limit_in_bytes" if self.v1 else "memory.max")).write_text(str(limit))
        except OSError as error:
            sys.exit(f"--memory-limit: cannot create the cgroup {self.path} ({error}); run as root")

    def enter(self) -> None:
        """Called in the child before it runs the command: it and its children are limited."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def oom_kills(self) -> int:
        events = self.path / ("memory.oom_control" if self.v1 else "memory.events")
        lines = dict(line.split() for line in events.read_text().splitlines())
        return int(lines.get("oom_kill", 0))

    def remove(self) -> None:
        self.path.rmdir()


def anonymous_bytes(root: psutil.Process) -> int:
    """RSS less file-backed and shared pages, over `root` and its descendants."""
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            info = process.memory_info()
        except psutil.Error:
            continue
        total += info.rss - info.shared
    return total


def run_sampled(command: list[str], cgroup: MemoryCgroup | None) -> tuple[subprocess.CompletedProcess, int]:
    """Runs `command`, returning its result and the peak anonymous bytes of its process tree."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out,
                                 stderr=err, text=True, preexec_fn=cgroup.enter if cgroup else None)
        root, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            peak = max(peak, anonymous_bytes(root))
            time.sleep(0.2)
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(command, child.returncode, out.read(), err.read()), peak


def train_command(args: argparse.Namespace, model: Path, photos: Path, storage: str,
                  more: list[str]) -> list[str]:
    command = [sys.executable, "-m", "flows.cli", "train", "--session", "host", "--storage", storage,
               "--model", str(model), "--photos", str(photos), "--steps", str(args.steps),
               "--chunk-steps", str(args.chunk_steps), "--method", args.method, "--sample-every", "0",
               "--text-encoder-steps", str(args.text_encoder_steps), "--device", args.device]
    if args.resolution:
        command += ["--resolution", str(args.resolution)]
    if args.mixed_precision:
        command += ["--mixed-precision", args.mixed_precision]
    return command + more


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["sd15", "sd21-512", "sd21-768-v", "sdxl"], default="sd15")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--chunk-steps", type=int, default=1)
    parser.add_argument("--method", default="dreambooth")
    parser.add_argument("--text-encoder-steps", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=None, help="default: the model's own (SDXL 1024)")
    parser.add_argument("--device", default="cpu", help="cuda: the host side of a GPU run (the [fit] goal: "
                        "a full SD 1.5 run under 12 GB)")
    parser.add_argument("--mixed-precision", default=None, help="e.g. bf16 (CPU autocast; frozen weights in half)")
    parser.add_argument("--memory-limit", type=float, default=None, metavar="GB",
                        help="run inside a memory cgroup of this many GB (1e9 bytes)")
    args, more = parser.parse_known_args()
    cgroup = MemoryCgroup(int(args.memory_limit * 1e9)) if args.memory_limit else None
    try:
        with tempfile.TemporaryDirectory(prefix="dreambooth-host-memory-") as tmp:
            model = write_random_model(args.model, Path(tmp) / args.model)
            size = round((args.resolution or (1024 if args.model == "sdxl" else 512)) * 1.25)
            photos = enlarged_photos(Path(tmp) / "photos", size)
            began = time.perf_counter()
            result, anonymous = run_sampled(train_command(args, model, photos, f"{tmp}/sessions", more), cgroup)
            seconds = time.perf_counter() - began
        killed = cgroup.oom_kills() if cgroup else 0
    finally:
        if cgroup:
            cgroup.remove()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kB on Linux -> GiB
    limit = f"inside {args.memory_limit} GB: {'killed' if killed else 'fits'}" if cgroup else "no limit"
    print(f"| {args.model}, {args.method}, {args.steps} steps, checkpoint every {args.chunk_steps} | "
          f"peak RSS {peak:.2f} GiB | peak anonymous {anonymous / 2**30:.2f} GiB | {limit} | {seconds:.0f} s |")
    if result.returncode:
        sys.exit(f"the run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    commits = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if "committing step" in line]
    print("commits without a host copy:", commits or "none (each from a copy, in the background)")


if __name__ == "__main__":
    main()
