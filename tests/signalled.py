"""Runs of the CLI that a test signals while a training step is paused (see paused_cli.py and
training/rank_fault/sitecustomize.py, which create the marker and wait for it to go)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def signal_when_paused(process: subprocess.Popen, marker: Path, signum: int = signal.SIGTERM,
                       timeout: float = 600) -> subprocess.CompletedProcess:
    """Wait for `marker`, send `signum`, let the step go on; the finished process's result."""
    deadline = time.monotonic() + 240
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"training never paused: {process.communicate()[1][-3000:]}"
    process.send_signal(signum)
    marker.unlink()
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
