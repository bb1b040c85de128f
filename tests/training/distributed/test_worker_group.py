"""What the pipeline tells the user when torchrun's agent reports failed ranks, and the flags it
starts the agent with."""

import os

from dreambooth_core.config import RuntimeSettings
from dreambooth_core.training.distributed.control import ProcessFailure
from dreambooth_core.training.distributed.worker_group import describe_failure, torchrun_flags


def failure(rank: int, message: str, signal: str | None = None) -> ProcessFailure:
    return ProcessFailure(rank=rank, exitcode=-9 if signal else 1, signal=signal, message=message)


def test_a_killed_rank_is_the_cause_not_the_rank_that_lost_its_connection_to_it():
    said = describe_failure([failure(0, "DistBackendError: Connection closed by peer"),
                             failure(1, "Signal 9 (SIGKILL) received by PID 7", "SIGKILL")], 2, 1800)
    assert said.startswith("training process rank 1 of 2 was killed by SIGKILL")


def test_a_timeout_names_the_rank_that_did_not_time_out_even_when_torchrun_then_killed_it():
    said = describe_failure([failure(0, "DistBackendError: [gloo] Timed out waiting 10000ms for recv"),
                             failure(1, "Signal 9 (SIGKILL) received by PID 7", "SIGKILL")], 2, 10)
    assert said.startswith("rank 0 of 2 waited 10 s (--rank-timeout) for the others, and rank 1 "
                           "stopped answering")


def test_an_aborted_rank_is_told_as_a_possible_timeout_of_nccl():
    said = describe_failure([failure(0, "Signal 6 (SIGABRT) received by PID 7", "SIGABRT")], 2, 60)
    assert said.startswith("training process rank 0 of 2 aborted (on GPUs, NCCL aborts a rank whose "
                           "collective waited --rank-timeout, 60 s")


def test_another_error_is_the_first_ranks_last_line():
    said = describe_failure([failure(1, "Traceback...\nValueError: something odd")], 4, 1800)
    assert said == "training process rank 1 of 4 failed: ValueError: something odd"


def test_one_machine_uses_the_standalone_rendezvous_several_the_static_one_with_the_node_rank():
    assert torchrun_flags(RuntimeSettings(), 4) == ["--standalone", "--nproc-per-node", "4"]
    several = RuntimeSettings(nnodes=2, node_rank=1, rdzv_endpoint="head:29500")
    assert torchrun_flags(several, 8) == ["--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "4",
                                          "--rdzv-backend", "static", "--rdzv-endpoint", "head:29500",
                                          "--rdzv-conf", "timeout=21600"]


def test_a_rank_stopped_by_torchrun_while_it_reports_its_own_failure_ends_in_one_line(tmp_path):
    """torchrun SIGTERMs the other ranks as soon as one fails; one that is itself failing then must
    still end in its one-line report (exit 1), not in a chained traceback."""
    import subprocess
    import sys

    script = tmp_path / "rank.py"
    script.write_text(
        "import os, signal, time\n"
        "from torch.distributed.elastic.multiprocessing import errors\n"
        "from dreambooth_core.training.distributed import workers\n"
        "def main(folder):\n"
        "    signal.signal(signal.SIGTERM, workers._stopped)\n"
        "    raise RuntimeError('[gloo] Connection closed by peer')\n"
        "def record(self, exc):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)  # torchrun stopping the rank, mid-report\n"
        "    time.sleep(0.2)\n"
        "workers.main = main\n"
        "errors.ErrorHandler.record_exception = record\n"
        "raise SystemExit(workers.run('unused'))\n")
    ended = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "RANK": "0"})
    assert ended.returncode == 1, ended.stderr
    assert "Traceback" not in ended.stderr
    assert "failed: RuntimeError: [gloo] Connection closed by peer" in ended.stderr
