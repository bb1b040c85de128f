"""Run the `dreambooth` CLI in a subprocess that SIGKILLs itself at a chosen instant.

    python run_cli.py [--kill-at POINT:N] -- train --session ...

POINTs (N counts calls in this process, from 1):
  step      before the Nth training step runs
  write     halfway through the Nth write into a checkpoint file
  manifest  just before the Nth checkpoint manifest is written
  export    halfway through copying the output file named N into the session
  prepare   once the Nth prepared photo reaches the run, its preparation workers still running
  sample    inside the Nth render of a sample prompt, once pending checkpoint commits are written
  evaluate  inside the Nth render of an evaluation prompt (the base model's count too), likewise

Before it dies it prints its processes then on stderr: `kill-at: children [{"pid", "started", "command"}]`.
"""

import os
import signal
import sys
import threading


def _die() -> None:
    import json

    import psutil

    children = [child.as_dict(["pid", "create_time", "cmdline"])
                for child in psutil.Process().children(recursive=True)]
    print("kill-at: children " + json.dumps([{"pid": c["pid"], "started": c["create_time"],
                                              "command": " ".join(c["cmdline"] or [])} for c in children]),
          file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _counting(original, n, partial=None):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] != n:
            return original(*args, **kwargs)
        if partial:
            partial(*args)
        _die()

    return wrapper


def arm(point: str, n: str) -> None:
    import dreambooth_core.session.folder as session
    from dreambooth_core.session import checkpoints as checkpoint
    from dreambooth_core.session.paths import CHECKPOINT_MANIFEST
    from dreambooth_core.training import trainer

    if point == "step":
        trainer.Trainer.step = _counting(trainer.Trainer.step, int(n))
    elif point == "write":
        def half(self, data):
            self.target.write(bytes(memoryview(data).cast("B")[: len(data) // 2]))
            self.target.flush()
        checkpoint._HashingFile.write = _counting(checkpoint._HashingFile.write, int(n), partial=half)
    elif point == "manifest":
        store = checkpoint.CheckpointStore
        original = store._write
        calls = {"n": 0}

        def write(self, relative, writer):
            if relative.endswith(CHECKPOINT_MANIFEST):
                calls["n"] += 1
                if calls["n"] == int(n):
                    _die()
            return original(self, relative, writer)
        store._write = write
    elif point == "export":
        original = session.Session.put_file

        def put_file(self, local, relative):
            if relative != n:
                return original(self, local, relative)
            data = open(local, "rb").read()
            self.write_with(relative, lambda f: (f.write(data[: len(data) // 2]), f.flush(), _die()))
        session.Session.put_file = put_file
    elif point == "prepare":
        from dreambooth_core.photos import prepare

        original = prepare.prepare_many

        def prepare_many(*args, **kwargs):
            for count, result in enumerate(original(*args, **kwargs), 1):
                if count == int(n):
                    _die()  # inside the pool's `with`: its workers are alive
                yield result
        prepare.prepare_many = prepare_many
    elif point in ("sample", "evaluate"):
        # Samples and evaluations render after the chunk's checkpoint commits in the background:
        # the kill comes once it is written, as it would in a render that takes its time.
        from dreambooth_core.evaluation import evaluate
        from dreambooth_core.generation import samples

        module = samples if point == "sample" else evaluate
        module.render = _counting(module.render, int(n), partial=_wait_for_commits)
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def _wait_for_commits(*args) -> None:
    for thread in threading.enumerate():
        if thread.name.startswith("checkpoint-"):  # LiveTraining's background commit
            thread.join()


def run_cli(api_url: str, *args: str, kill_at: str | None = None, cwd=None, timeout: float = 600):
    """`dreambooth ARGS` in a subprocess of this script (killed at `kill_at`), against the Prefect
    server at `api_url`; the CompletedProcess, its output captured as text."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    command = [sys.executable, __file__, *(["--kill-at", kill_at] if kill_at else []), "--", *args]
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": str(repo)}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "--kill-at":
        point, count = args[1].split(":")
        arm(point, count)
        args = args[2:]
    assert args[0] == "--"
    from flows.cli import main

    sys.exit(main(args[1:]))
