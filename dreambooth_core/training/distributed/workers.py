"""The training processes of a --gpus N run, started by torchrun (agent.py) and alive for the whole run:

    python -m dreambooth_core.training.distributed.workers CONTROL_FOLDER   (torchrun's; never by hand)

Rank 0 takes each order the pipeline writes to the control folder (control.py) and hands
it to the other ranks over the process group; every rank then runs the same chunk body
as one process does (chunk.py) on its share of each batch, rank 0 commits and writes the
report. Each rank keeps its trainer between chunks, so the base model is loaded once per
process per run and chunks after the first continue in memory.

Every machine fetches the base model into its own cache from the spec rank 0 used, and
all ranks compare the digests of their copies before the first step of each order: a
machine with another copy (a moved hub revision, a different local folder) stops the
run with its name rather than training on other weights.

A collective that waits longer than --rank-timeout for another rank raises here; the
process then fails and torchrun stops the others, and the pipeline names the rank. A
SIGTERM to any rank stops all of them after the same step, rank 0 commits, and the
processes end cleanly with a report that says so.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from datetime import timedelta
from typing import NamedTuple

from dreambooth_core import errors
from dreambooth_core.families.base_model import fetch_base
from dreambooth_core.model.cache import model_cache_dir
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.processes import pid_alive
from dreambooth_core.session.storage import BlockLoader, use_block_storage
from dreambooth_core.training.chunk import ChunkHooks, run_chunk, trainer_key
from dreambooth_core.training.distributed.control import ControlFolder, Report, WorkerError
from dreambooth_core.training.live import LiveTraining
from dreambooth_core.training.plan import Chunk, TrainingPlan

ORDERS_TIMEOUT = timedelta(days=2)  # rank 0's work between chunks: samples, evaluation, the pipeline's own
USER_ERRORS = (errors.DreamBoothError, errors.NetworkError)


class Order(NamedTuple):
    plan: TrainingPlan
    chunk: Chunk
    hooks: ChunkHooks  # rank 0's; the others train without hooks
    storage: BlockLoader | None  # how blocks open storage, for a session on a storage block


class CopiesDiffer(errors.ModelError):
    """Raised alike on every rank (each compares all ranks' answers), so they stop together."""


class Stopped(Exception):
    """SIGTERM reached this process (handed on by stop_requests once training has stopped)."""


def _stopped(signum, frame) -> None:
    raise Stopped


class Ranks:
    """This process's place in the run, and the process groups it trains and takes orders on."""

    def __init__(self, rank_timeout: float):
        import torch
        import torch.distributed as dist

        self.rank, self.world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        backend, local = "gloo", int(os.environ["LOCAL_RANK"])
        if torch.cuda.device_count() >= int(os.environ["LOCAL_WORLD_SIZE"]):  # else --device cpu: gloo alone
            torch.cuda.set_device(local)
            backend = "cpu:gloo,cuda:nccl"  # training on GPUs through NCCL, with --device cpu through gloo
        # CPU threads: OMP_NUM_THREADS, which worker_group.py sets to this machine's share.
        dist.init_process_group(backend, timeout=timedelta(seconds=rank_timeout))
        self.orders = dist.new_group(backend="gloo", timeout=ORDERS_TIMEOUT)

    def share(self, value: object) -> object:
        """Rank 0's `value`, on every rank."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.orders)
        return box[0]

    def gather(self, value: object) -> list:
        import torch.distributed as dist

        values = [None] * self.world
        dist.all_gather_object(values, value, group=self.orders)
        return values


def main(folder: str) -> int:
    control = ControlFolder(folder)
    launch = control.launch()
    signal.signal(signal.SIGTERM, _stopped)  # the handler stop_requests hands SIGTERM back to
    ranks = Ranks(launch.rank_timeout)
    control.record_pid(ranks.rank)
    log = rank_log(ranks.rank)
    try:
        with LiveTraining() as live:
            follow_orders(control, ranks, live, launch.pipeline_pid, log)
    except Stopped:
        log.info("stopped on SIGTERM")
    except USER_ERRORS as exc:  # this rank's alone (rank 0 reports its own): the pipeline reads it
        control.record_error(ranks.rank, worker_error(exc))
        raise
    finally:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def follow_orders(control: ControlFolder, ranks: Ranks, live: LiveTraining, pipeline: int | None,
                  log) -> None:
    """Train the chunks the pipeline orders until it orders none."""
    copies: dict[tuple, TrainingPlan] = {}  # the base model on this machine, fetched once per run
    n, lead = 0, ranks.rank == 0
    while True:
        order, in_memory = (control.take_order(n, lambda: pid_alive(pipeline)) if lead else None), False
        if order is not None:  # rank 0 decides whether the run continues from memory
            known = copies.get((order.plan.base_model, order.plan.model_digest), order.plan)
            in_memory = live.holds(trainer_key(known), order.chunk.start)
            if not in_memory:
                live.wait()  # every rank then reads the same latest checkpoint
        order, in_memory = ranks.share((order, in_memory) if lead else None)
        if order is None:
            return
        use_block_storage(order.storage)
        try:
            plan = agreed_plan(order.plan, ranks, copies, log)
            held = live.holds(trainer_key(plan), order.chunk.start)
            if held and not in_memory:
                live.release()  # rank 0 restores from the checkpoint: so does every rank
            elif in_memory and not held:
                raise RuntimeError(f"rank {ranks.rank} lost the trainer rank 0 continues with")
            hooks = order.hooks if lead else ChunkHooks()
            outcome = run_chunk(plan, order.chunk, live, hooks, log, ranks.rank, ranks.world)
            if lead:
                control.report(n, Report(outcome=outcome))
        except Stopped:
            if lead:
                live.wait()
                store = CheckpointStore(order.plan.session.open(), order.plan.runtime.keep_checkpoints)
                control.report(n, Report(stopped_at=store.latest_step()))
            raise
        except USER_ERRORS as exc:
            if lead:
                control.report(n, Report(error=worker_error(exc)))
            elif not isinstance(exc, (errors.TrainingError, CopiesDiffer)):
                raise
            else:  # all ranks stop at one check (first_bad_step, agreed_plan); rank 0 tells the user
                log.info("stopped with rank 0: %s", str(exc).split(".")[0])
        n += 1


def worker_error(exc: Exception) -> WorkerError:
    """The error as the pipeline raises it again: its class of dreambooth_core.errors, and its message."""
    kind = next(k for k in type(exc).__mro__ if getattr(errors, k.__name__, None) is k)
    return WorkerError(kind=kind.__name__, message=str(exc))


def agreed_plan(plan: TrainingPlan, ranks: Ranks, copies: dict[tuple, TrainingPlan], log) -> TrainingPlan:
    """`plan` with this machine's copy of the base model, once every rank has one with rank 0's
    digest; the same ModelError on every rank otherwise (CopiesDiffer, so they stop together)."""
    key = (plan.base_model, plan.model_digest)
    problem = None
    if key not in copies:
        try:
            copies[key] = local_copy(plan, log)
        except USER_ERRORS as exc:
            problem = str(exc)
    local = copies.get(key)
    digest = local.model_digest if local else None
    answers = ranks.gather((socket.gethostname(), digest, problem))
    for rank, (host, their_digest, their_problem) in enumerate(answers):
        if their_problem:
            raise CopiesDiffer(f"rank {rank} (machine {host}) could not fetch the base model: "
                                    f"{their_problem}")
        if their_digest != plan.model_digest:
            raise CopiesDiffer(
                f"rank {rank} (machine {host}) has another copy of base model {plan.base_model.model!r} "
                f"(digest {their_digest[:12]}, rank 0's is {plan.model_digest[:12]}): a hub repo that moved "
                "on, or a local folder that differs between machines. Pin --revision, or give every machine "
                "the same files.")
    return local


def local_copy(plan: TrainingPlan, log) -> TrainingPlan:
    """The plan with the base model in this machine's cache, from the spec rank 0 used (with this
    machine's HF_TOKEN: Prefect's blocks are read on machine 0 only). The machine's command fetched
    it before the ranks started (flows/cli.py): here it is found, as building one inside a process
    group would write nothing on ranks above 0 (transformers saves on global rank 0 only). A plan
    that does not name its spec (recorded before it did) uses rank 0's path as it is."""
    if plan.base_model is None:
        return plan
    model = fetch_base(plan.base_model, model_cache_dir(), os.environ.get("HF_TOKEN"), log)
    return plan.model_copy(update={"model_path": model.path, "model_digest": model.digest})


def run(folder: str) -> int:
    """main, with a failure told as torchrun expects (its error file, which agent.py hands on) and
    in one line of this rank's log: a traceback only for what looks like a bug, not for a rank that
    failed because another vanished or stopped answering, nor for a user's error."""
    import traceback

    import torch.distributed as dist
    from torch.distributed.elastic.multiprocessing.errors import get_error_handler

    handler = get_error_handler()
    handler.initialize()
    try:
        return main(folder)
    except Exception as exc:
        # torchrun sends SIGTERM to the other ranks when one fails: it must not cut this report short
        # (Stopped raised inside it would end the process in a chained traceback).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        handler.record_exception(exc)
        expected = isinstance(exc, (dist.DistError, *USER_ERRORS)) or "gloo" in str(exc).lower()
        if not expected:
            traceback.print_exc()
        rank_log(int(os.environ["RANK"])).error("failed: %s: %s", type(exc).__name__,
                                                (str(exc).strip().splitlines() or [""])[0])
        return 1


def rank_log(rank: int) -> logging.Logger:
    """The log of a training process beside the pipeline's own: lines on stderr, marked with the
    rank. (The pipeline's Prefect logger does not reach another process.)"""
    log = logging.getLogger(f"dreambooth.rank{rank}")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"rank {rank} | %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
