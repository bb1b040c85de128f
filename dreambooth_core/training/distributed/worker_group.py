"""A run's training processes, seen from the pipeline: torchrun's agent and the ranks it starts.

The pipeline's process (the flow, where Prefect sees each chunk as a task) is not a rank:
it starts torchrun's agent (agent.py) at the first chunk of a --gpus N run and orders
each chunk through the control folder (control.py); the ranks live until the run ends.
Why not make the pipeline rank 0: torchrun stops every rank when one fails, and the
pipeline (its Prefect flow run, its temporary server, its error message) must outlive a
rank to tell the user what happened; and a rank's memory (the trainer, its CUDA context)
then never shares a process with samples or export.

Whatever the ranks do, the session stays the truth: an order is a chunk of the plan, a
chunk ends in a committed checkpoint, and a rerun resumes from the latest one whatever
happened to the processes of this run.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from dreambooth_core import errors
from dreambooth_core.config import RuntimeSettings
from dreambooth_core.session.storage import block_storage_loader
from dreambooth_core.training.chunk import ChunkHooks, ChunkOutcome, trainer_key
from dreambooth_core.training.distributed.control import (ControlFolder, Launch, ProcessFailure, Relay,
                                                         Report, WorkerError)
from dreambooth_core.training.live import LiveTraining
from dreambooth_core.training.plan import Chunk, TrainingPlan
from dreambooth_core.training.preemption import stop_requests
from dreambooth_core.training.distributed.workers import Order

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # where `-m dreambooth_core...` imports from
# How long the other machines wait for machine 0 at the rendezvous: its pipeline starts its ranks at the
# first chunk, after photos, the model download and class images (torchrun's default: 10 minutes).
RENDEZVOUS_SECONDS = 6 * 3600


def run_chunk_on_processes(plan: TrainingPlan, chunk: Chunk, live: LiveTraining, hooks: ChunkHooks,
                           log: logging.Logger) -> ChunkOutcome:
    """chunk.run_chunk on the run's --gpus processes, started at its first chunk."""
    group = live.workers(trainer_key(plan), lambda: WorkerGroup(plan.runtime, plan.training.gpus, log))
    log.info("Training steps %d-%d on %d processes", chunk.start, chunk.end, plan.training.gpus)
    return group.train(plan, chunk, hooks)


def torchrun_flags(runtime: RuntimeSettings, gpus: int) -> list[str]:
    """One machine: torchrun's standalone rendezvous. Several: its static one, which gives machine
    k ranks k*n to k*n+n-1, so rank 0 is on machine 0 with the pipeline."""
    per_machine = str(gpus // runtime.nnodes)
    if runtime.nnodes == 1:
        return ["--standalone", "--nproc-per-node", per_machine]
    return ["--nnodes", str(runtime.nnodes), "--node-rank", str(runtime.node_rank), "--nproc-per-node",
            per_machine, "--rdzv-backend", "static", "--rdzv-endpoint", str(runtime.rdzv_endpoint),
            "--rdzv-conf", f"timeout={RENDEZVOUS_SECONDS}"]


class WorkerGroup:
    """The training processes of this machine, for one run."""

    def __init__(self, runtime: RuntimeSettings, gpus: int, log: logging.Logger, pipeline: bool = True):
        self.world, self.log, self.rank_timeout = gpus, log, runtime.rank_timeout
        self._folder = tempfile.TemporaryDirectory(prefix="dreambooth-ranks-")
        self.control = ControlFolder(self._folder.name)
        self.control.write_launch(Launch(pipeline_pid=os.getpid() if pipeline else None,
                                         rank_timeout=runtime.rank_timeout))
        self._orders = 0
        per_machine = gpus // runtime.nnodes
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_PACKAGE_ROOT),
                                                                         os.environ.get("PYTHONPATH")]))}
        # Each rank's share of the CPU cores (torch reads it as it starts). CPU kernels sum in an order that
        # depends on their thread count: runs compared bit for bit give each rank the same number.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // per_machine)))
        env.setdefault("LOGLEVEL", "CRITICAL")  # torchrun's own account of a failure: the pipeline tells it
        for name, value in (("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error"),
                            ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):  # as the pipeline quiets them for itself
            env.setdefault(name, value)
        log.info("Starting %d training processes on this machine (torchrun; %d in all)", per_machine, gpus)
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "dreambooth_core.training.distributed.agent", self._folder.name,
             *torchrun_flags(runtime, gpus)], env=env)

    def train(self, plan: TrainingPlan, chunk: Chunk, hooks: ChunkHooks) -> ChunkOutcome:
        """Chunk `chunk`, trained by every rank; rank 0's UI callbacks (`hooks.on_progress`,
        `on_chunk_end`) run here, from the events it relays. A SIGTERM to this process goes on to the
        ranks of this machine (preemption), which stop together, commit, and end the run as one
        process would."""
        loader = block_storage_loader() if plan.session.storage_block else None
        n, self._orders = self._orders, self._orders + 1
        relayed = replace(hooks, on_progress=(Relay(self.control.folder, n, "progress"),),
                          on_chunk_end=(Relay(self.control.folder, n, "chunk_end"),))
        callbacks = {"progress": hooks.on_progress, "chunk_end": hooks.on_chunk_end}

        def on_event(kind: str, value: object) -> None:
            for callback in callbacks[kind]:
                callback(value)

        with stop_requests(plan.runtime.preemption_grace) as stop:
            stop.on_request = self._signal_ranks
            self.control.send_order(n, Order(plan, chunk, relayed, loader))
            report = self.control.wait_report(n, lambda: self.agent.poll() is None, on_event)
        if report is None:
            self.agent.wait()
            raise self.failure_error(plan)
        return self._outcome(report, stop.requested)

    def _outcome(self, report: Report, signalled: bool) -> ChunkOutcome:
        if report.error is not None:
            raise user_error(report.error)
        if report.stopped_at is not None:
            # Reached only when this process was not signalled itself: a rank was (above, the signal
            # went back to the handler before stop_requests, as in one process).
            raise errors.TrainingError(
                f"training stopped: a training process received SIGTERM (preemption of its machine), and "
                f"every rank stopped with it; step {report.stopped_at} is committed. Run the same command "
                "again to resume from it.")
        assert report.outcome is not None
        return report.outcome

    def _signal_ranks(self) -> None:
        for pid in self.control.pids():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Order the end and wait for the ranks, which first finish committing."""
        if self.agent.poll() is None:
            self.control.send_order(self._orders, None)
            try:
                self.agent.wait(timeout=self.rank_timeout + 60)
            except subprocess.TimeoutExpired:  # a rank hangs: torchrun ends them all
                self.agent.terminate()
                self.agent.wait()
        self._folder.cleanup()

    def wait(self) -> None:
        """On a machine above 0: until the run ends; its failure as a user's error."""
        if self.agent.wait() != 0:
            raise self.failure_error(None)

    def failure_error(self, plan: TrainingPlan | None) -> errors.DreamBoothError | errors.NetworkError:
        """Why the ranks ended before reporting, in one paragraph."""
        latest = ""
        if plan is not None:
            from dreambooth_core.session.checkpoints import CheckpointStore

            step = CheckpointStore(plan.session.open(), plan.runtime.keep_checkpoints).latest_step()
            latest = (f" Checkpoints committed before it are kept: run the same command again to resume from "
                      f"step {step}." if step else " No checkpoint was committed yet.")
        own = self.control.errors()
        if own:  # a user's error on a rank other than 0 (rank 0 reports its own)
            return user_error(own[min(own)])
        cause = describe_failure(self.control.failures(), self.world, self.rank_timeout)
        return errors.TrainingError(f"training stopped: {cause}.{latest}")


def user_error(error: WorkerError) -> errors.DreamBoothError | errors.NetworkError:
    kind = getattr(errors, error.kind, None)
    if isinstance(kind, type) and issubclass(kind, (errors.DreamBoothError, errors.NetworkError)):
        return kind(error.message)
    return errors.TrainingError(error.message)


def describe_failure(failures: list[ProcessFailure], world: int, timeout: float) -> str:
    """The cause, ranked: ranks whose collectives timed out (another stopped answering, and torchrun
    then killed that one), a rank killed by a signal (the others fail only because it vanished),
    else the first rank's own error."""
    if not failures:
        return ("torchrun's agent ended without naming a failed process (it was killed, or the rendezvous "
                "failed)")
    timed_out = [f for f in failures if "timed out" in f.message.lower() or "timeout" in f.message.lower()]
    if timed_out:
        silent = sorted(set(range(world)) - {f.rank for f in timed_out})
        who = f"rank {', '.join(map(str, silent))}" if silent else "a rank on another machine"
        return (f"rank {timed_out[0].rank} of {world} waited {timeout:.0f} s (--rank-timeout) for the "
                f"others, and {who} stopped answering (a hung process, or its machine was lost)")
    aborted = [f for f in failures if f.signal == "SIGABRT"]
    if aborted:  # not run on GPUs yet: how NCCL's watchdog ends a rank whose collective timed out
        return (f"training process rank {aborted[0].rank} of {world} aborted (on GPUs, NCCL aborts a rank "
                f"whose collective waited --rank-timeout, {timeout:.0f} s: another rank may have stopped "
                "answering); torchrun ended the other ranks")
    killed = [f for f in failures if f.signal]
    if killed:
        return (f"training process rank {killed[0].rank} of {world} was killed by {killed[0].signal} (out of "
                "host memory, or stopped from outside); torchrun ended the other ranks")
    first = failures[0]
    return f"training process rank {first.rank} of {world} failed: {first.message.strip().splitlines()[-1]}"
