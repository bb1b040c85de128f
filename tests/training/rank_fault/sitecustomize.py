"""Test-only fault injection for data-parallel runs, loaded by every process (also spawned ones).

DREAMBOOTH_KILL_RANK="R:N" makes the process of rank R SIGKILL itself before its
Nth training step, as a crashed GPU process would vanish.
DREAMBOOTH_PAUSE_RANK="R:S:MARKER" makes it create MARKER when it starts training
step S (0-based, counted over the run) and wait (up to 30 s) until MARKER is removed,
so that a test can signal the run meanwhile.
"""

import os

_kill = os.environ.get("DREAMBOOTH_KILL_RANK")
_pause = os.environ.get("DREAMBOOTH_PAUSE_RANK")
if _kill or _pause:
    import signal
    import time
    from pathlib import Path

    from dreambooth_core.training import trainer as _trainer

    _rank, _n, *_marker = (_kill or _pause).split(":", 2)
    _rank, _n = int(_rank), int(_n)
    _original, _calls = _trainer.Trainer.step, {"n": 0}

    def _step(self, step):
        if self.world > 1 and self.rank == _rank:
            _calls["n"] += 1
            if _calls["n"] == _n and _kill:
                os.kill(os.getpid(), signal.SIGKILL)
            if step == _n and _pause:
                marker, until = Path(_marker[0]), time.monotonic() + 30
                marker.touch()
                while marker.exists() and time.monotonic() < until:
                    time.sleep(0.05)
        return _original(self, step)

    _trainer.Trainer.step = _step
