"""`dreambooth worker`: Prefect's process worker, stopped within a grace period.

On SIGTERM, `prefect worker start` stops taking runs and waits for the flow runs it started
to finish (prefect/utilities/processutils: setup_signal_handlers_worker), however long they
train, and they never see the signal: they run in their own process groups. A node being
drained or a deploy gives it some 30 s before SIGKILL, which then loses the steps trained since
the last checkpoint. Here the worker runs as a child; on SIGTERM (or Ctrl-C) the flow runs get
SIGTERM, which makes training commit a checkpoint within --preemption-grace and end the run
Crashed (the resume automation reschedules it for the next worker), and the worker gets its
own; whatever is left when `grace` seconds are up is killed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil

ENGINE = "prefect.engine"  # the module a process worker runs each flow run with


def flow_run_processes(worker: psutil.Process) -> list[psutil.Process]:
    try:
        children = worker.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if ENGINE in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # ended meanwhile
            continue
    return found


def stop(worker: subprocess.Popen, grace: float) -> bool:
    """SIGTERM to each flow run, then to the worker; SIGKILL to what is left after `grace` s.
    Whether all had ended by then.

    The worker is paused (SIGSTOP) while its runs commit: it takes no new run meanwhile, and
    it does not end first, which would kill the runs before they report their end (a run left
    Running is marked Crashed only by the heartbeat timeout, a minute later)."""
    deadline = time.monotonic() + grace
    root = psutil.Process(worker.pid)
    runs = flow_run_processes(root)
    root.suspend()
    try:
        for run in runs:
            run.send_signal(signal.SIGTERM)
        still_running(runs, deadline)
    finally:
        root.resume()
    worker.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs([root, *runs], timeout=max(deadline - time.monotonic(), 0))
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    worker.wait()
    return not alive


def still_running(processes: list[psutil.Process], deadline: float) -> list[psutil.Process]:
    """Wait until each has ended or `deadline`; those still running. A child of the paused
    worker that has ended stays a zombie until the worker reaps it: ended all the same."""
    while True:
        alive = [p for p in processes if _running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.2)


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run_worker(pool: str, grace: float) -> int:
    """Run the worker until it ends or a SIGTERM/SIGINT stops it; its exit status, or once
    stopped 0 when everything ended within `grace`, 1 when something had to be killed."""
    stopping: list[int] = []

    def on_signal(signum, _frame) -> None:
        stopping.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                               "--type", "process"], start_new_session=True)  # the signals are ours
    while worker.poll() is None and not stopping:
        time.sleep(0.2)
    if not stopping:
        return worker.returncode
    print(f"Stopping the worker: its flow runs commit and end within {grace:g} s.", file=sys.stderr)
    if stop(worker, grace):
        return 0
    print(f"error: the worker or a flow run was still running {grace:g} s after SIGTERM and was killed; "
          "its run resumes from the checkpoint before.", file=sys.stderr)
    return 1
