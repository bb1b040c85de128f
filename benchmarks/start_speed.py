"""A short `dreambooth train` end to end and by phase, optionally side by side with diffusers'
examples/dreambooth/train_dreambooth.py on the same model, photos and steps.

    python benchmarks/start_speed.py                                   # 3 runs, no reference
    python benchmarks/start_speed.py --runs 5 --reference ~/diffusers/examples/dreambooth/train_dreambooth.py

The reference script is read from a local diffusers checkout, never copied here; it needs
torchvision (and diffusers, transformers, accelerate), so run this with a Python that has
them beside the project. Both train the same small model at --resolution for --steps steps
with the text encoder, a checkpoint every --chunk-steps steps, then write their model.

The model is built once, before any timed run, and both are given its folder. A warm-up run
of each (untimed) fills the page cache and Prefect's database, as on a machine that has
trained before; the first run in a new Prefect home is timed once on its own (first_run).
Each timed run is a fresh session; ours starts its own temporary server (no PREFECT_API_URL).
Runs are paired and alternate which goes first. Prints JSON: per phase the median, and the
median of the paired ratios ours / reference.

Phases of our run, from its log lines (wall clock):
- to_flow:    command start to "Beginning flow run" (imports, server start, checks before run);
- checks:     to the end of "plan training" (session, photos, model, captions, tokens, plan);
- model_load: to "Chunk 1/..." (the trainer built: weights loaded, latents cached);
- training:   to the last chunk's end (steps, checkpoint commits, loss plots);
- export:     to the end of the export task;
- finish:     to the process's exit (summary, server stop).
imports (`import flows.dreambooth` in a new interpreter) and server_start (a temporary server
to its first answer) are timed apart; in a run they overlap.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PHOTOS = REPO / "examples" / "photos"
# Prefect's console lines: "08:06:38.062 | INFO    | Task run 'validate photos' - ..."
LOG_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+ +\| (?:Task|Flow) run '([^']+)' - (.*)$")


def timed(command: list[str], env: dict, cwd: Path = REPO) -> tuple[float, str, datetime]:
    launched, start = datetime.now(), time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done.stdout + done.stderr, launched


def log_events(log: str, launched: datetime) -> list[tuple[float, str, str]]:
    """(seconds since launch, run name, message) of each Prefect log line."""
    events = []
    for line in log.splitlines():
        match = LOG_LINE.match(line)
        if match:
            clock = datetime.combine(launched.date(), datetime.strptime(match.group(1), "%H:%M:%S.%f").time())
            if clock < launched - timedelta(hours=12):  # the run crossed midnight
                clock += timedelta(days=1)
            events.append(((clock - launched).total_seconds(), match.group(2), match.group(3)))
    return events


def phase_seconds(log: str, launched: datetime, total: float) -> dict[str, float]:
    events = log_events(log, launched)

    def first(run: str, message: str) -> float:
        return next(t for t, r, m in events if r.startswith(run) and m.startswith(message))

    def last(run: str, message: str) -> float:
        return max(t for t, r, m in events if r.startswith(run) and m.startswith(message))

    marks = [0.0, first("", "Beginning flow run"), last("plan training", "Finished"),
             first("train steps", "Chunk 1/"), last("train steps", "Finished"), last("export", "Finished"), total]
    names = ("to_flow", "checks", "model_load", "training", "export", "finish")
    return {name: round(b - a, 3) for name, a, b in zip(names, marks, marks[1:])}


class Bench:
    def __init__(self, args, root: Path):
        self.args, self.root = args, root
        self.model = build_model(args.model, root / "cache")
        self.env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        self.env.update(PYTHONPATH=str(REPO), PREFECT_HOME=str(root / "prefect"), HF_HUB_OFFLINE="1",
                        DREAMBOOTH_CACHE=str(root / "cache"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        self.count = 0

    def ours(self, session: str | None = None, env: dict | None = None) -> tuple[float, str, datetime, list]:
        self.count += 1
        command = [sys.executable, "-m", "flows.cli", "train", "--session", session or f"run{self.count}",
                   "--storage", str(self.root / "sessions"), "--photos", str(PHOTOS), "--model", self.model,
                   "--resolution", str(self.args.resolution), "--steps", str(self.args.steps),
                   "--chunk-steps", str(self.args.chunk_steps), "--sample-every", "0", "--seed", "0"]
        seconds, log, launched = timed(command, env or self.env)
        return seconds, log, launched, command

    def reference(self) -> float:
        self.count += 1
        out = self.root / f"reference{self.count}"
        command = [self.args.reference_python, str(self.args.reference), "--pretrained_model_name_or_path",
                   self.model, "--instance_data_dir", str(PHOTOS), "--instance_prompt", "photo of shrk",
                   "--output_dir", str(out), "--resolution", str(self.args.resolution), "--train_batch_size", "1",
                   "--max_train_steps", str(self.args.steps), "--checkpointing_steps", str(self.args.chunk_steps),
                   "--seed", "0", "--train_text_encoder"]
        return timed(command, self.env, cwd=self.root)[0]


def build_model(name: str, cache: Path) -> str:
    """A local diffusers folder of `name` (the tiny model is built here, once)."""
    from dreambooth_core.families.base_model import fetch_model

    return str(fetch_model(name, cache).path)


def imports_seconds(env: dict) -> float:
    probe = "import time; t = time.perf_counter(); import flows.dreambooth; print(time.perf_counter() - t)"
    return float(timed([sys.executable, "-c", probe], env)[1].strip().splitlines()[-1])


def server_start_seconds(env: dict) -> float:
    probe = ("import time; t = time.perf_counter(); from flows.temporary_server import TemporaryServer; "
             "s = TemporaryServer(); s.wait_ready(); print(time.perf_counter() - t); s.stop()")
    return float(timed([sys.executable, "-c", probe], env)[1].strip().splitlines()[-1])


def first_run(bench: Bench) -> float:
    """A run in a Prefect home no run has used: its server creates the database."""
    env = {**bench.env, "PREFECT_HOME": str(bench.root / "new-prefect-home")}
    return bench.ours("first", env)[0]


def measure(args, root: Path) -> dict:
    bench = Bench(args, root)
    first = first_run(bench)
    bench.ours("warm-up")
    if args.reference:
        bench.reference()
    runs, references, reruns = [], [], []
    for index in range(args.runs):
        reference_first = bool(args.reference) and index % 2 == 1
        if reference_first:
            references.append(bench.reference())
        seconds, log, launched, command = bench.ours()
        runs.append({**phase_seconds(log, launched, seconds), "end_to_end": seconds})
        if args.reference and not reference_first:
            references.append(bench.reference())
        reruns.append(timed(command, bench.env)[0])
    medians = {phase: round(statistics.median(r[phase] for r in runs), 2) for phase in runs[0]}
    result = {"phases_median_s": {**medians, "imports": round(imports_seconds(bench.env), 2),
                                  "server_start": round(server_start_seconds(bench.env), 2)},
              "rerun_median_s": round(statistics.median(reruns), 2), "first_run_s": round(first, 2),
              "ours_s": [round(r["end_to_end"], 2) for r in runs]}
    if references:
        ratios = [r["end_to_end"] / ref for r, ref in zip(runs, references)]
        result.update(reference_s=[round(r, 2) for r in references],
                      reference_median_s=round(statistics.median(references), 2),
                      paired_ratio_median=round(statistics.median(ratios), 3))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="Base model for both (default: the built-in tiny one).")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--chunk-steps", type=int, default=10, help="Steps between checkpoints, for both.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reference", type=Path, help="diffusers' examples/dreambooth/train_dreambooth.py.")
    parser.add_argument("--reference-python", default=sys.executable)
    args = parser.parse_args()
    if args.reference and not args.reference.is_file():
        sys.exit(f"--reference {args.reference}: no such file (diffusers' examples/dreambooth/train_dreambooth.py)")
    with tempfile.TemporaryDirectory(prefix="dreambooth-start-") as tmp:
        result = measure(args, Path(tmp))
    print(json.dumps({"machine": f"{platform.machine()} {os.cpu_count()} cores", "python": sys.executable,
                      "model": args.model, "resolution": args.resolution, "steps": args.steps,
                      "chunk_steps": args.chunk_steps, "runs": args.runs, **result}, indent=2))


if __name__ == "__main__":
    main()
