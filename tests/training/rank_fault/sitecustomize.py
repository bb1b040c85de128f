"""Test-only fault injection for data-parallel runs, loaded by every process (torchrun's ranks too).

Each takes "R:S:..." where R is the rank and S the (0-based) training step of the run at whose
start the fault happens:
DREAMBOOTH_KILL_RANK="R:S:FILE": rank R waits (up to 60 s) until FILE exists, e.g. the
  MANIFEST.json that commits a checkpoint, then SIGKILLs itself, as a crashed GPU process vanishes.
DREAMBOOTH_HANG_RANK="R:S": rank R stops answering (sleeps for 10 minutes), as a lost machine does.
DREAMBOOTH_PAUSE_RANK="R:S:MARKER": rank R writes its pid to MARKER and waits (up to 30 s) until
  MARKER is removed, so that a test can signal it (or the run) meanwhile.
"""

import os

_faults = {name: os.environ.get(f"DREAMBOOTH_{name}_RANK") for name in ("KILL", "HANG", "PAUSE")}
if any(_faults.values()):
    import signal
    import time
    from pathlib import Path

    from dreambooth_core.training import trainer as _trainer

    _original = _trainer.Trainer.step

    def _fault(name: str, rank: int, step: int) -> str | None:
        """The fault's third part ('' when it has none), when it applies to this rank and step."""
        if not _faults[name]:
            return None
        at_rank, at_step, *rest = _faults[name].split(":", 2)
        return (rest[0] if rest else "") if (int(at_rank), int(at_step)) == (rank, step) else None

    def _step(self, step):
        if self.world > 1:
            if (file := _fault("KILL", self.rank, step)) is not None:
                until = time.monotonic() + 60
                while not Path(file).exists() and time.monotonic() < until:
                    time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGKILL)
            if _fault("HANG", self.rank, step) is not None:
                time.sleep(600)
            if marker := _fault("PAUSE", self.rank, step):
                marker, until = Path(marker), time.monotonic() + 30
                marker.write_text(str(os.getpid()))
                while marker.exists() and time.monotonic() < until:
                    time.sleep(0.05)
        return _original(self, step)

    _trainer.Trainer.step = _step
