"""Many sessions through one Prefect server, work pool and worker, as an operator runs them
(docs/operations/deployments.md), with a worker lost and the server restarted while runs go on.

    python benchmarks/load_test.py                          # 12 sessions, SIGKILL, a restart
    python benchmarks/load_test.py --sessions 3 --steps 4 --chunk-steps 2 --stop term --no-restart \
        --no-renders                                        # the test suite's form

Starts `prefect server start` (its own PREFECT_HOME, SQLite unless --database-url), creates the
local pool with its limit of one run, deploys `local` and `generate-local`, applies the
automations and starts `dreambooth worker`. Then `dreambooth upload` for --sessions sessions
at once (the tiny model), and while they run: once a run has committed its first checkpoint
its worker is stopped (--stop kill: SIGKILL of the worker and its runs, a lost machine; term:
SIGTERM, a drained node) and a new worker started; once half the sessions are trained the
server is stopped and started again. Reports (JSON on stdout, --json FILE too):
- sessions completed / failed / crashed, renders completed, wall time, seconds per upload;
- hand-off gaps: from one run's end to the next queued run's start, on the one-run pool;
- the stopped run: when it was marked Crashed, when it ran again, how long the worker took
  to end; automation actions that failed (each one acted on a run that had finished);
- the server's peak memory (its process tree's RSS), database size, events by name;
- whether every session's final weights equal an uninterrupted run's (`dreambooth train`).
Exits 1 on any loss: a session not Completed, a render not Completed, different weights, an
automation action on a finished run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from flows.automations import CANCEL_SETTLE_SECONDS  # noqa: E402  (after the path)

PHOTOS = REPO / "examples" / "photos"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
# A Crashed run is rescheduled by the resume automation once no cancellation came within
# CANCEL_SETTLE_SECONDS (and Prefect's trigger evaluation); until then it has not ended.
RESCHEDULE_SECONDS = CANCEL_SETTLE_SECONDS + 30
LEASES_ON_DISK = "prefect.server.concurrency.lease_storage.filesystem"  # as docs/operations/server.md's server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ended(run: dict) -> bool:
    """Whether a flow run has ended for good: terminal, and if Crashed, not rescheduled in time."""
    if run["state_type"] != "CRASHED":
        return run["state_type"] in TERMINAL
    since = datetime.fromisoformat(run["state"]["timestamp"]).timestamp()
    return time.time() - since > RESCHEDULE_SECONDS


def wait_until(condition, seconds: float, what: str, poll: float = 1.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise SystemExit(f"load test: timed out after {seconds:g} s waiting for {what}")


class Machine:
    """The server, the workers and the commands of one load test, in `home`."""

    def __init__(self, home: Path, database_url: str | None):
        self.home, self.port = home, free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.env = {**os.environ, "PREFECT_HOME": str(home / "prefect"), "PREFECT_API_URL": self.api,
                    "PYTHONPATH": str(REPO), "DREAMBOOTH_HOME": str(REPO), "PREFECT_CLI_PROMPT": "false",
                    "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "flows.event_ordering",  # as docs/operations/server.md
                    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASES_ON_DISK,
                    "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "0",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        if database_url:
            self.env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
        self.server: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.peak_server_rss = 0

    def start(self, args: list[str], log: str, **options) -> subprocess.Popen:
        return subprocess.Popen(args, env=self.env, cwd=REPO, stdout=open(self.home / log, "a"),
                                stderr=subprocess.STDOUT, **options)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(list(args), env=self.env, cwd=REPO, capture_output=True, text=True,
                                timeout=1200)
        if result.returncode:
            raise SystemExit(f"load test: {' '.join(args)} failed:\n"
                             f"{result.stdout[-2000:]}{result.stderr[-3000:]}")
        return result

    def start_server(self) -> None:
        command = [sys.executable, "-m", "prefect", "server", "start", "--port", str(self.port)]
        self.server = self.start(command, "server.log", start_new_session=True)
        wait_until(self.healthy, 180, "the Prefect server")

    def stop_server(self) -> None:
        os.killpg(self.server.pid, signal.SIGTERM)
        self.server.wait(timeout=60)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def sample_server_memory(self) -> None:
        try:
            root = psutil.Process(self.server.pid)
            rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            return
        self.peak_server_rss = max(self.peak_server_rss, rss)

    def start_worker(self) -> subprocess.Popen:
        worker = self.start([sys.executable, "-m", "flows.cli", "worker", "--pool", "local-process"],
                            f"worker{len(self.workers) + 1}.log", start_new_session=True)
        self.workers.append(worker)
        return worker

    def api_post(self, path: str, body: dict) -> list | dict:
        for _ in range(30):  # the server may be restarting
            try:
                return httpx.post(f"{self.api}{path}", json=body, timeout=30).json()
            except httpx.HTTPError:
                time.sleep(2)
        raise SystemExit(f"load test: the server did not answer {path}")

    def flow_runs(self, flow: str) -> list[dict]:
        body = {"flows": {"name": {"any_": [flow]}}, "flow_runs": {"deployment_id": {"is_null_": False}}}
        return self.api_post("/flow_runs/filter", body)

    def states(self, run_id: str) -> list[dict]:
        states = httpx.get(f"{self.api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30).json()
        return sorted(states, key=lambda s: s["timestamp"])

    def event_counts(self) -> dict[str, int]:
        until = datetime.now().astimezone()  # at most 1000 buckets of a day: the server's rule
        body = {"filter": {"occurred": {"since": (until - timedelta(days=1)).isoformat(),
                                        "until": until.isoformat()}}}
        counts = self.api_post("/events/count-by/event", body)
        return {c["value"]: c["count"] for c in counts}

    def stop_all(self) -> None:
        """Everything this started, the processes under each worker included (the worker that
        `dreambooth worker` starts has a session of its own)."""
        for process in [*self.workers, self.server]:
            if process is None or process.poll() is not None:
                continue
            tree = psutil.Process(process.pid)
            for member in [tree, *tree.children(recursive=True)]:
                try:
                    member.kill()
                except psutil.NoSuchProcess:
                    pass
            process.wait()


def settings(steps: int, chunk: int) -> list[str]:
    return ["--model", "tiny", "--steps", str(steps), "--chunk-steps", str(chunk), "--learning-rate", "1e-4",
            "--seed", "11"]


def set_up(machine: Machine, renders: bool) -> None:
    """The commands of docs/operations/deployments.md, in order (the server is started)."""
    py = sys.executable
    machine.run(py, "-m", "prefect", "work-pool", "create", "local-process", "--type", "process")
    machine.run(py, "-m", "prefect", "work-pool", "set-concurrency-limit", "local-process", "1")
    names = ["--name", "local", *(["--name", "generate-local"] if renders else [])]
    machine.run(py, "-m", "prefect", "deploy", *names)
    machine.run(py, "-m", "flows.cli", "automations", "apply")
    machine.start_worker()


def upload_all(machine: Machine, storage: Path, names: list[str], flags: list[str]) -> list[float]:
    def upload(name: str) -> float:
        began = time.monotonic()
        machine.run(sys.executable, "-m", "flows.cli", "upload", "--session", name, "--photos", str(PHOTOS),
                    "--storage", str(storage), *flags)
        return time.monotonic() - began

    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(upload, names))


def committed(storage: Path, name: str, step: int) -> bool:
    return (storage / name / "checkpoints" / f"step-{step:06d}" / "MANIFEST.json").exists()


def stop_worker(machine: Machine, how: str) -> tuple[float, int]:
    """Stop the current worker as a lost machine (kill) or a drained node (term); returns how
    long it took to end and its exit status (`dreambooth worker`: 0 when all ended in its grace)."""
    worker = machine.workers[-1]
    began = time.monotonic()
    if how == "kill":
        root = psutil.Process(worker.pid)
        for group in {os.getpgid(p.pid) for p in [root, *root.children(recursive=True)]}:
            os.killpg(group, signal.SIGKILL)
    else:
        worker.send_signal(signal.SIGTERM)
    code = worker.wait(timeout=120)
    return time.monotonic() - began, code


def timestamp(state: dict) -> float:
    return datetime.fromisoformat(state["timestamp"]).timestamp()


def hand_off_gaps(histories: list[list[dict]]) -> list[float]:
    """Seconds from a run's end to the next run's start, while runs were waiting."""
    spans = []
    for states in histories:
        starts = [timestamp(s) for s in states if s["type"] == "RUNNING"]
        ends = [timestamp(s) for s in states if s["type"] in TERMINAL]
        spans += [(start, min([e for e in ends if e > start], default=start)) for start in starts]
    spans.sort()
    return [round(nxt[0] - cur[1], 1) for cur, nxt in zip(spans, spans[1:]) if nxt[0] >= cur[1]]


def same_weights(session: Path, reference: Path, steps: int) -> bool:
    import safetensors.torch
    import torch

    path = Path("checkpoints") / f"step-{steps:06d}" / "weights.safetensors"
    if not (session / path).exists():
        return False
    ours, theirs = safetensors.torch.load_file(session / path), safetensors.torch.load_file(reference / path)
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def database_bytes(machine: Machine) -> int | None:
    if "PREFECT_API_DATABASE_CONNECTION_URL" in machine.env:
        return None
    return sum(p.stat().st_size for p in (machine.home / "prefect").glob("prefect.db*"))


def load_test(args: argparse.Namespace, home: Path) -> dict:
    flags = settings(args.steps, args.chunk_steps)
    machine = Machine(home, args.database_url)
    reference = home / "reference"
    try:
        machine.start_server()
        # before the deployments: once they are, its end would trigger a render
        machine.run(sys.executable, "-m", "flows.cli", "train", "--session", "ref", "--photos", str(PHOTOS),
                    "--storage", str(reference), *flags)
        set_up(machine, args.renders)
        return observe(machine, args, flags, reference / "ref", home / "sessions")
    finally:
        machine.stop_all()


def observe(machine: Machine, args, flags: list[str], reference: Path, storage: Path) -> dict:
    names = [f"load-{i:02d}" for i in range(args.sessions)]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(1):
            machine.sample_server_memory()

    threading.Thread(target=sample, daemon=True).start()
    began = time.monotonic()
    upload_seconds = upload_all(machine, storage, names, flags)
    named = sum(r["name"] in names for r in machine.flow_runs("dreambooth-train"))  # most still queued
    wait_until(lambda: any(committed(storage, n, args.chunk_steps) for n in names), 600, "a first checkpoint")
    stopped_at = time.time()
    worker_ended, worker_code = stop_worker(machine, args.stop)
    machine.start_worker()
    restart_down = None
    if args.restart:
        wait_until(lambda: sum(committed(storage, n, args.steps) for n in names) >= len(names) // 2,
                   1800, "half the sessions trained", poll=2)
        down = time.monotonic()
        machine.stop_server()
        machine.start_server()
        restart_down = round(time.monotonic() - down, 1)

    def finished() -> bool:
        runs = machine.flow_runs("dreambooth-train") + machine.flow_runs("dreambooth-generate")
        return len(runs) >= (1 + args.renders) * len(names) and all(map(ended, runs))

    wait_until(finished, args.timeout, "every run to end", poll=3)
    time.sleep(5)  # automations acting late on finished runs would show now
    wall = time.monotonic() - began
    sampling.set()
    return report(machine, args, names, storage, reference, {
        "wall_seconds": round(wall, 1), "upload_seconds": [round(s, 1) for s in upload_seconds],
        "worker_stop": args.stop, "worker_ended_seconds": round(worker_ended, 1),
        "worker_exit_status": worker_code, "stopped_at": stopped_at,
        "server_restart_seconds_down": restart_down,
        "runs_named_for_their_session_after_upload": named})


def report(machine: Machine, args, names, storage: Path, reference: Path, measured: dict) -> dict:
    train, render = machine.flow_runs("dreambooth-train"), machine.flow_runs("dreambooth-generate")
    histories = {r["id"]: machine.states(r["id"]) for r in train + render}
    stopped_at = measured.pop("stopped_at")
    retried = [r for r in train if r["run_count"] > 1]
    recovery = []
    for run in retried:
        states = histories[run["id"]]
        crashes = [timestamp(s) for s in states if s["type"] == "CRASHED" and timestamp(s) >= stopped_at - 5]
        crashed = min(crashes, default=None)
        starts = [timestamp(s) for s in states
                  if s["type"] == "RUNNING" and crashed and timestamp(s) > crashed]
        again = min(starts, default=None)
        recovery.append({"session": run["name"],
                         "crashed_after_seconds": crashed and round(crashed - stopped_at, 1),
                         "running_again_after_seconds": again and round(again - stopped_at, 1)})
    events = machine.event_counts()
    equal = {n: same_weights(storage / n, reference, args.steps) for n in names}
    gaps = hand_off_gaps(list(histories.values()))
    result = {
        "sessions": len(names), "steps": args.steps,
        "database": "postgresql" if args.database_url else "sqlite",
        "completed": sum(r["state_type"] == "COMPLETED" for r in train),
        "failed": sum(r["state_type"] == "FAILED" for r in train),
        "crashed": sum(r["state_type"] == "CRASHED" for r in train),
        "renders_completed": sum(r["state_type"] == "COMPLETED" for r in render), "renders": len(render),
        **measured,
        "hand_off_gap_seconds": {"median": statistics.median(gaps) if gaps else None,
                                 "max": max(gaps, default=None)},
        "recovered": recovery,
        "automation_actions_failed": events.get("prefect.automation.action.failed", 0),
        "server_peak_rss_mib": round(machine.peak_server_rss / 2**20),
        "database_bytes": database_bytes(machine),
        "events": dict(sorted(events.items(), key=lambda kv: -kv[1])),
        "weights_equal_uninterrupted": sum(equal.values()),
        "histories": {r["name"]: [f"{s['name']}: {(s.get('message') or '')[:160]}" for s in histories[r["id"]]]
                      for r in train + render},
    }
    renders_wanted = len(names) if args.renders else 0
    result["lost"] = (result["completed"] < len(names) or result["renders_completed"] < renders_wanted
                      or result["weights_equal_uninterrupted"] < len(names)
                      or result["automation_actions_failed"] > 0 or not retried)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=12)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--chunk-steps", type=int, default=4)
    parser.add_argument("--stop", choices=["kill", "term"], default="kill",
                        help="How the worker is stopped once: SIGKILL (lost machine) or SIGTERM (drain).")
    parser.add_argument("--restart", action=argparse.BooleanOptionalAction, default=True,
                        help="Stop and start the server once half the sessions are trained.")
    parser.add_argument("--renders", action=argparse.BooleanOptionalAction, default=True,
                        help="Deploy generate-local too: a render after each training.")
    parser.add_argument("--database-url", default=None, help="PREFECT_API_DATABASE_CONNECTION_URL "
                        "(e.g. postgresql+asyncpg://user:pass@localhost/prefect); default: SQLite.")
    parser.add_argument("--timeout", type=float, default=3600, help="Seconds for every run to end.")
    parser.add_argument("--json", type=Path, default=None, help="Write the report here too.")
    parser.add_argument("--keep", type=Path, default=None, help="Work in this folder and keep it.")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = load_test(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="load-test-") as home:
            result = load_test(args, Path(home))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 1 if result["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
