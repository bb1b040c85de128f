"""The channel between a run's pipeline and its training processes: files in a folder of its own.

The pipeline (the flow's process) writes order n (a chunk to train, or the end), rank 0
of the training processes takes it, hands it to the other ranks over their process
group, and writes report n (the chunk's outcome, a user's error, or a stop on SIGTERM).
Files rather than a socket: no port to find or guard, nothing to reconnect, and what a
crashed process left is there to read (each rank's pid, its error). The pipeline looks
for the report a few times a second, nothing beside minutes of training. Every file is
written beside its name and renamed, so a reader never sees half of one. The folder is a
temporary one on machine 0's local disk, where rank 0 runs beside the pipeline (torchrun's
static rendezvous puts it there), not in the session: a session on gs:// would turn each
look into a request.

The session stays the truth: an order names a chunk of the plan, and training it means
what it means in one process, a committed checkpoint at its end (chunk.py); the folder
holds only what the run's processes say to each other while they live.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from dreambooth_core.training.chunk import ChunkOutcome

POLL_SECONDS = 0.1


class WorkerError(BaseModel):
    """A user's error in a training process (a DreamBoothError or NetworkError): its class and message."""

    model_config = ConfigDict(frozen=True)
    kind: str
    message: str


class Report(BaseModel):
    """What rank 0 says of order n: exactly one of the three."""

    model_config = ConfigDict(frozen=True)
    outcome: ChunkOutcome | None = None
    error: WorkerError | None = None
    stopped_at: int | None = None  # stopped on SIGTERM; the latest committed step


class ProcessFailure(BaseModel):
    """A training process that ended badly, as torchrun's agent saw it."""

    model_config = ConfigDict(frozen=True)
    rank: int
    exitcode: int
    signal: str | None  # the signal's name when one ended it
    message: str


class Launch(BaseModel):
    """What every training process of this machine reads as it starts."""

    model_config = ConfigDict(frozen=True)
    pipeline_pid: int | None  # the process that sends orders (None on machines above 0)
    rank_timeout: float


class Relay:
    """A UI callback of rank 0 (progress, the loss plot) that hands its argument to the pipeline, where
    the callbacks that reach Prefect run."""

    def __init__(self, folder: Path | str, n: int, kind: str):
        self.folder, self.n, self.kind = str(folder), n, kind

    def __call__(self, value: object) -> None:
        ControlFolder(self.folder).post_event(self.n, self.kind, value)


class ControlFolder:
    def __init__(self, folder: Path | str):
        self.folder = Path(folder)

    def _write(self, name: str, data: bytes) -> None:
        temporary = self.folder / f".{name}.{os.getpid()}"
        temporary.write_bytes(data)
        temporary.rename(self.folder / name)

    def _wait_for(self, name: str, alive: Callable[[], bool]) -> Path | None:
        """The file once it exists; None when `alive()` says the writer is gone first."""
        path = self.folder / name
        while not path.exists():
            if not alive():
                return path if path.exists() else None
            time.sleep(POLL_SECONDS)
        return path

    def write_launch(self, launch: Launch) -> None:
        self._write("launch.json", launch.model_dump_json().encode())

    def launch(self) -> Launch:
        return Launch.model_validate_json((self.folder / "launch.json").read_text())

    # -- orders, from the pipeline to rank 0 ------------------------------------------------

    def send_order(self, n: int, order: object) -> None:
        """Pickled: the plan and hooks are Python objects for this machine's own processes."""
        self._write(f"order-{n}.pkl", pickle.dumps(order))

    def take_order(self, n: int, alive: Callable[[], bool]) -> object | None:
        path = self._wait_for(f"order-{n}.pkl", alive)
        return None if path is None else pickle.loads(path.read_bytes())

    # -- reports, from rank 0 to the pipeline -----------------------------------------------

    def report(self, n: int, report: Report) -> None:
        self._write(f"report-{n}.json", report.model_dump_json().encode())

    def wait_report(self, n: int, alive: Callable[[], bool],
                    on_event: Callable[[str, object], None] = lambda kind, value: None) -> Report | None:
        """Report n, passing on rank 0's events (relayed UI callbacks) meanwhile."""
        seen: set[str] = set()

        def alive_and_relaying() -> bool:
            for path in sorted(self.folder.glob(f"event-{n}-*.pkl")):
                if path.name not in seen:
                    seen.add(path.name)
                    on_event(*pickle.loads(path.read_bytes()))
            return alive()

        path = self._wait_for(f"report-{n}.json", alive_and_relaying)
        alive_and_relaying()  # the events written before the report
        return None if path is None else Report.model_validate_json(path.read_text())

    def post_event(self, n: int, kind: str, value: object) -> None:
        self._write(f"event-{n}-{time.time_ns():020d}.pkl", pickle.dumps((kind, value)))

    # -- what the processes leave for whoever explains their end ----------------------------

    def record_pid(self, rank: int) -> None:
        self._write(f"pid-{rank}", str(os.getpid()).encode())

    def pids(self) -> list[int]:
        return [int(p.read_text()) for p in self.folder.glob("pid-*")]

    def record_error(self, rank: int, error: WorkerError) -> None:
        self._write(f"error-{rank}.json", error.model_dump_json().encode())

    def errors(self) -> dict[int, WorkerError]:
        return {int(p.stem.split("-")[1]): WorkerError.model_validate_json(p.read_text())
                for p in self.folder.glob("error-*.json")}

    def record_failures(self, failures: list[ProcessFailure]) -> None:
        self._write("failures.json", b"[" + b",".join(f.model_dump_json().encode() for f in failures) + b"]")

    def failures(self) -> list[ProcessFailure]:
        import json

        path = self.folder / "failures.json"
        return [ProcessFailure(**f) for f in json.loads(path.read_text())] if path.exists() else []
