"""Run the `dreambooth` CLI, pausing inside the Nth training step so a test can signal it.

    python paused_cli.py STEP MARKER -- train --session ...

When the Nth step (counted in this process, from 1) starts, MARKER is created and the
step waits up to 30 s before it runs; the test sends its signal meanwhile.
"""

import sys
import time
from pathlib import Path


def pause_at(n: int, marker: Path) -> None:
    from dreambooth_core.training import trainer

    original, calls = trainer.Trainer.step, {"n": 0}

    def step(self, index):
        calls["n"] += 1
        if calls["n"] == n:
            marker.touch()
            until = time.monotonic() + 30
            while time.monotonic() < until and marker.exists():  # the test removes it once signalled
                time.sleep(0.05)
        return original(self, index)

    trainer.Trainer.step = step


if __name__ == "__main__":
    step_number, marker, separator, *args = sys.argv[1:]
    assert separator == "--"
    pause_at(int(step_number), Path(marker))
    from flows.cli import main

    sys.exit(main(args))
