"""A helper process ends with the process that started it, however that one ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]

# A parent that forks a child calling end_with_parent, prints the child's pid, and waits.
PARENT = """
import json, multiprocessing, os, sys, time
from dreambooth_core.session.processes import end_with_parent

def child(parent):
    armed = end_with_parent(parent)
    print(json.dumps({"armed": armed}), flush=True)
    time.sleep(600)

process = multiprocessing.get_context("fork").Process(target=child, args=(os.getpid(),))
process.start()
print(json.dumps({"child": process.pid}), flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_child_ends_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    child = None
    try:
        lines = [json.loads(parent.stdout.readline()) for _ in range(2)]
        facts = {key: value for line in lines for key, value in line.items()}
        assert facts["armed"] is True
        child = psutil.Process(facts["child"])
        assert child.is_running()
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while not gone_or_zombie(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gone_or_zombie(child), "the child outlived its killed parent"
    finally:
        parent.kill()
        parent.wait()
        if child is not None and not gone_or_zombie(child):
            child.kill()  # what the test found left behind


def gone_or_zombie(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_child_whose_parent_is_already_gone_ends_at_once():
    code = ("import os\nfrom dreambooth_core.session.processes import end_with_parent\n"
            "end_with_parent(os.getppid() + 1 if os.getppid() != 1 else 2)\nprint('still here')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and "still here" not in done.stdout

