"""A short `dreambooth train` end to end and by phase: what a run costs besides training.

    python benchmarks/start_speed.py                          # tiny model, 40 steps, chunks of 10, 3 runs
    python benchmarks/start_speed.py --runs 1 --steps 2

Each run is a fresh session on its own temporary storage and Prefect home, with no
PREFECT_API_URL (so the run starts its own server). Prints JSON: per phase the
median over the runs of
- imports:       `import flows.dreambooth` in a new interpreter (torch, diffusers, transformers, prefect);
- server_start:  a temporary Prefect server from start to its first answer (alone; in a run it
                 starts while the imports run);
- checks (session, model, photos, tokens, plan), training, export: first to last log line of
                 those tasks in the run's log;
- end_to_end:    the whole `dreambooth train` command;
- rerun:         the same command again on the finished session (nothing to train).
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
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO / "examples" / "photos"
# Prefect's console lines: "08:06:38.062 | INFO    | Task run 'validate photos' - ..."
LOG_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+ +\| Task run '([^']+)'")
PHASES = {"checks": ("open session", "fetch model", "validate photos", "prepare photos", "caption photos",
                     "check tokens", "class images", "plan training"),
          "training": ("train steps",), "export": ("export",)}


def timed(command: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done.stdout + done.stderr


def phase_seconds(log: str) -> dict[str, float]:
    """First to last log line of each phase's tasks."""
    stamps: dict[str, list[datetime]] = {phase: [] for phase in PHASES}
    for line in log.splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        for phase, names in PHASES.items():
            if match.group(2).startswith(names):
                stamps[phase].append(datetime.strptime(match.group(1), "%H:%M:%S.%f"))
    return {phase: (max(s) - min(s)).total_seconds() if s else 0.0 for phase, s in stamps.items()}


def server_start_seconds(env: dict) -> float:
    probe = ("import time; t = time.perf_counter(); from flows.temporary_server import TemporaryServer; "
             "s = TemporaryServer(); s.wait_ready(); print(time.perf_counter() - t); s.stop()")
    _, out = timed([sys.executable, "-c", probe], env)
    return float(out.strip().splitlines()[-1])


def one_run(args, folder: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PYTHONPATH=str(REPO), PREFECT_HOME=str(folder / "prefect"), HF_HUB_OFFLINE="1",
               DREAMBOOTH_CACHE=str(folder / "cache"))
    imports, _ = timed([sys.executable, "-c", "import flows.dreambooth"], env)
    command = [sys.executable, "-m", "flows.cli", "train", "--session", "bench", "--storage", str(folder / "s"),
               "--photos", str(PHOTOS), "--model", args.model, "--steps", str(args.steps),
               "--chunk-steps", str(args.chunk_steps), "--sample-every", "0"]
    timed([sys.executable, "-m", "flows.cli", "train", "--help"], env)  # the tiny model and caches aside
    end_to_end, log = timed(command, env)
    rerun, _ = timed(command, env)
    return {"imports": imports, "server_start": server_start_seconds(env), **phase_seconds(log),
            "end_to_end": end_to_end, "rerun": rerun}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--chunk-steps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="dreambooth-start-") as tmp:
            runs.append(one_run(args, Path(tmp)))
    medians = {phase: round(statistics.median(r[phase] for r in runs), 2) for phase in runs[0]}
    print(json.dumps({"machine": f"{platform.machine()} {os.cpu_count()} cores", "model": args.model,
                      "steps": args.steps, "chunk_steps": args.chunk_steps, "runs": args.runs,
                      "median_s": medians}, indent=2))


if __name__ == "__main__":
    main()
