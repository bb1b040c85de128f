"""torchrun's agent for one machine of a run:

    python -m dreambooth_core.training.distributed.agent CONTROL_FOLDER TORCHRUN_FLAGS...

It is torchrun itself (torch.distributed.run's `run`: the rendezvous, the worker
processes, stopping them all when one fails) with the training processes
(workers.py) as its command. One thing is added: when a process fails, the
agent's account of it (rank, exit code or signal, the error it recorded) is
written to the control folder as data, so the pipeline can tell the user in one
paragraph rather than pass on torchrun's report.
"""

from __future__ import annotations

import sys

from dreambooth_core.training.distributed.control import ControlFolder, ProcessFailure


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    folder, flags = argv[0], argv[1:]
    workers = "dreambooth_core.training.distributed.workers"
    args = get_args_parser().parse_args([*flags, "-m", workers, folder])
    try:
        run(args)
    except ChildFailedError as exc:
        ControlFolder(folder).record_failures([
            ProcessFailure(rank=rank, exitcode=failure.exitcode, message=_message(failure.message),
                           signal=failure.signal_name() if failure.exitcode < 0 else None)
            for rank, failure in exc.failures.items()])
        return 1
    return 0


def _message(message: str | dict) -> str:
    """A process's error as its error file has it ({"message": ..., "extraInfo": ...}), or a signal's."""
    return str(message.get("message", "")) if isinstance(message, dict) else message


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
