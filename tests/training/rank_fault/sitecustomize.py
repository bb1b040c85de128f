"""Test-only fault injection for data-parallel runs, loaded by every process (also spawned ones).

DREAMBOOTH_KILL_RANK="R:N" makes the process of rank R SIGKILL itself before its
Nth training step, as a crashed GPU process would vanish.
"""

import os

_spec = os.environ.get("DREAMBOOTH_KILL_RANK")
if _spec:
    import signal

    from tasks.training import trainer as _trainer

    _rank, _n = map(int, _spec.split(":"))
    _original, _calls = _trainer.Trainer.step, {"n": 0}

    def _step(self, step):
        if self.world > 1 and self.rank == _rank:
            _calls["n"] += 1
            if _calls["n"] == _n:
                os.kill(os.getpid(), signal.SIGKILL)
        return _original(self, step)

    _trainer.Trainer.step = _step
