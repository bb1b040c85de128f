"""--gpus N: data-parallel training in N processes that torchrun starts once per run (gloo on the
CPU here), on one machine or several, resumed exactly after a crash, a SIGTERM or a hang."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

pytestmark = pytest.mark.slow  # a CLI run each: the full suite only

REPO = Path(__file__).resolve().parents[3]
FAULT = Path(__file__).resolve().parents[1] / "rank_fault"
FAULTS = ("DREAMBOOTH_KILL_RANK", "DREAMBOOTH_HANG_RANK", "DREAMBOOTH_PAUSE_RANK")


def command(root: Path, *extra: str) -> list[str]:
    """(A diverging run with two processes: tests/flows/test_bad_input.py.)"""
    return [sys.executable, "-m", "flows.cli", "train", "--session", "s", "--storage", str(root / "sessions"),
            "--model", "tiny", "--photos", str(REPO / "examples" / "photos"), "--steps", "8", "--chunk-steps",
            "4", "--gpus", "2", "--device", "cpu", "--batch-size", "2", "--learning-rate", "1e-4",
            "--sample-every", "0", "--seed", "4", *extra]


def environment(api_url: str, **faults: str) -> dict[str, str]:
    """One CPU thread per process in every run: CPU kernels sum in an order that depends on the thread
    count, and a machine with one rank would otherwise give it two."""
    env = {k: v for k, v in os.environ.items() if k not in FAULTS}
    return {**env, "PREFECT_API_URL": api_url, "PYTHONPATH": f"{FAULT}{os.pathsep}{REPO}",
            "OMP_NUM_THREADS": "1", **faults}


def train(api_url, root: Path, *extra: str, **faults: str) -> subprocess.CompletedProcess:
    """The CLI with --gpus 2 on this machine; `faults`: rank_fault's variables."""
    root.mkdir(exist_ok=True)
    return subprocess.run(command(root, *extra), cwd=root, env=environment(api_url, **faults),
                          capture_output=True, text=True, timeout=600)


def weights(root: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(root / "sessions" / "s" / "checkpoints" / "step-000008" /
                                       "weights.safetensors")


def assert_same_weights(expected: Path, actual: Path) -> None:
    expected, actual = weights(expected), weights(actual)
    different = [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def committed(root: Path) -> list[str]:
    return sorted(p.parent.name for p in (root / "sessions" / "s").glob("checkpoints/*/MANIFEST.json"))


def error_paragraph(stderr: str) -> str:
    """The CLI's one `error:` paragraph; no traceback besides it."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def start_machines(api_url: str, root: Path, machines: list[Path], *extra: str) -> list[subprocess.Popen]:
    """The command on two "machines": one rank each, meeting at a free port of this host; machine 1 has
    its own working folder and model cache, and shares the session storage in `root`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{s.getsockname()[1]}"
    processes = []
    for rank, folder in enumerate(machines):
        env = environment(api_url, DREAMBOOTH_CACHE=str(folder / "cache")) if rank else environment(api_url)
        flags = ("--nnodes", "2", "--node-rank", str(rank), "--rdzv-endpoint", endpoint, *extra)
        processes.append(subprocess.Popen(command(root, *flags), cwd=folder, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return processes


@pytest.fixture(scope="module")
def whole(prefect_api_url, tmp_path_factory) -> Path:
    """The uninterrupted two-process run the others compare with."""
    root = tmp_path_factory.mktemp("whole")
    result = train(prefect_api_url, root)
    assert result.returncode == 0, result.stderr[-3000:]
    (root / "stderr.txt").write_text(result.stderr)
    return root


def test_each_process_loads_the_model_once_per_run_and_continues_the_next_chunk_in_memory(whole):
    stderr = (whole / "stderr.txt").read_text()
    assert stderr.count("Starting 2 training processes on this machine (torchrun; 2 in all)") == 1
    for rank in (0, 1):
        assert stderr.count(f"rank {rank} | Loading the base model") == 1
        assert f"rank {rank} | Continuing from step 4 in memory" in stderr
    assert committed(whole) == ["step-000004", "step-000008"]


def test_two_machines_train_the_model_of_one_machine_each_with_its_own_model_cache(prefect_api_url, whole,
                                                                                    tmp_path):
    """Two torchrun agents meeting at a rendezvous endpoint, as two machines do: machine 1 has its own
    model cache and working folder (it builds the model itself) and shares only the session storage."""
    machines = [tmp_path / "machine0", tmp_path / "machine1"]
    for folder in machines:
        folder.mkdir()
    processes = start_machines(prefect_api_url, tmp_path, machines)
    results = [p.communicate(timeout=600) for p in processes]
    for process, (_, stderr) in zip(processes, results):
        assert process.returncode == 0, stderr[-3000:]
    first, second = (stderr for _, stderr in results)
    assert "Starting 1 training processes on this machine (torchrun; 2 in all)" in first
    assert f"Built the tiny model in {machines[1] / 'cache'}" in second
    assert f"rank 1 | Using the tiny model in {machines[1] / 'cache'}" in second
    assert second.count("rank 1 | Loading the base model") == 1
    assert "rank 1 | Continuing from step 4 in memory" in second
    assert_same_weights(whole, tmp_path)


def test_a_machine_whose_copy_of_the_base_model_differs_stops_the_run_before_the_first_step(
        prefect_api_url, tiny_model_path, tmp_path):
    """`--model ./model` names each machine's own folder (relative to its working folder): machine 1's
    copy has another scheduler config, so its digest differs from rank 0's."""
    import json
    import shutil

    machines = [tmp_path / "machine0", tmp_path / "machine1"]
    for folder in machines:
        shutil.copytree(tiny_model_path, folder / "model")
    config = machines[1] / "model" / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "steps_offset": 7}))
    processes = start_machines(prefect_api_url, tmp_path, machines, "--model", "./model")
    (_, first), (_, second) = [p.communicate(timeout=600) for p in processes]
    assert processes[0].returncode == 2, first[-3000:]
    assert error_paragraph(first).startswith(
        "error: rank 1 (machine ") and "has another copy of base model './model'" in first
    assert "rank 1 | stopped with rank 0: rank 1 (machine" in second
    assert committed(tmp_path) == []


def test_a_rank_killed_after_a_commit_ends_in_an_error_and_the_rerun_resumes_exactly(prefect_api_url, whole,
                                                                                      tmp_path):
    manifest = tmp_path / "sessions" / "s" / "checkpoints" / "step-000004" / "MANIFEST.json"
    crashed = train(prefect_api_url, tmp_path, DREAMBOOTH_KILL_RANK=f"1:5:{manifest}")  # in the second chunk
    assert crashed.returncode == 2, crashed.stderr[-3000:]
    assert error_paragraph(crashed.stderr).startswith(
        "error: training stopped: training process rank 1 of 2 was killed by SIGKILL")
    assert "run the same command again to resume from step 4" in crashed.stderr
    assert committed(tmp_path) == ["step-000004"]

    resumed = train(prefect_api_url, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "rank 1 | Resuming from committed checkpoint at step 4" in resumed.stderr
    assert_same_weights(whole, tmp_path)


def paused_in_step_5(api_url: str, root: Path, marker: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    """The command started with rank 1 paused at the start of step 5 (rank_fault's PAUSE) until
    `marker` is removed; and rank 1's pid."""
    process = subprocess.Popen(command(root, *extra), cwd=root, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE,
                               env=environment(api_url, DREAMBOOTH_PAUSE_RANK=f"1:5:{marker}"))
    deadline = time.monotonic() + 300
    while not (marker.exists() and marker.read_text()) and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), process.communicate()[1][-3000:]
    return process, int(marker.read_text())


@pytest.mark.parametrize("target", ["rank 1", "the command"])
def test_a_sigterm_stops_every_rank_at_the_same_step_which_commits(prefect_api_url, whole, tmp_path, target):
    """Preemption of one process's machine (a SIGTERM to rank 1), or of the machine the command runs on
    (it passes the signal on): all ranks stop after the step they are in, and rank 0 commits."""
    marker = tmp_path / "in-step"
    process, rank_1 = paused_in_step_5(prefect_api_url, tmp_path, marker)
    os.kill(rank_1 if target == "rank 1" else process.pid, signal.SIGTERM)
    marker.unlink()
    _, stderr = process.communicate(timeout=600)
    assert "rank 0 | SIGTERM: stopping at step 6; committing a checkpoint first" in stderr, stderr[-3000:]
    assert committed(tmp_path) == ["step-000004", "step-000006"]
    if target == "the command":  # ends as one process does: killed by the signal it passed on
        assert process.returncode == -signal.SIGTERM, stderr[-3000:]
        return
    assert process.returncode == 2, stderr[-3000:]
    assert "step 6 is committed. Run the same command again to resume from it." in error_paragraph(stderr)

    resumed = train(prefect_api_url, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "rank 0 | Resuming from committed checkpoint at step 6" in resumed.stderr
    assert_same_weights(whole, tmp_path)


def test_a_rank_that_stops_answering_ends_the_run_after_the_rank_timeout(prefect_api_url, tmp_path):
    hung = train(prefect_api_url, tmp_path, "--rank-timeout", "10", DREAMBOOTH_HANG_RANK="1:5")
    assert hung.returncode == 2, hung.stderr[-3000:]
    assert error_paragraph(hung.stderr).startswith(
        "error: training stopped: rank 0 of 2 waited 10 s (--rank-timeout) for the others, and rank 1 "
        "stopped answering")
    assert committed(tmp_path) == ["step-000004"]


def test_a_deployment_flow_run_starts_its_training_processes_as_the_command_does(prefect_api_url, whole,
                                                                                  tmp_path):
    """A work pool runs a flow run as `python -m prefect.engine` (a pod with several GPUs: no torchrun in
    its command); `training.gpus` starts the ranks the same way."""
    import uuid

    from prefect.client.orchestration import get_client

    from dreambooth_core.config import DreamBoothConfig

    config = DreamBoothConfig(session="s", storage=str(tmp_path / "sessions"), model="tiny",
                              photos=str(REPO / "examples" / "photos"), steps=8, chunk_steps=4, gpus=2,
                              device="cpu", batch_size=2, learning_rate=1e-4, sample_every=0, seed=4)
    with get_client(sync_client=True) as client:
        deployment = client.create_deployment(flow_id=client.create_flow_from_name("dreambooth-train"),
                                              name=f"gpus-{uuid.uuid4().hex[:6]}",
                                              entrypoint="flows/dreambooth.py:dreambooth_train")
        run = client.create_flow_run_from_deployment(deployment,
                                                     parameters={"config": config.model_dump(mode="json")})
    env = {**environment(prefect_api_url), "PREFECT__FLOW_RUN_ID": str(run.id)}
    result = subprocess.run([sys.executable, "-m", "prefect.engine"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1 | Continuing from step 4 in memory" in result.stderr
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run.id).state.name == "Completed"
    assert_same_weights(whole, tmp_path)


def test_two_processes_train_what_one_process_trains_with_their_whole_batch(prefect_api_url, whole, tmp_path):
    """Each rank takes its rows of one process's draws (examples, flips, latent samples, noise,
    timesteps), so --gpus 2 --batch-size 2 trains what --gpus 1 --batch-size 4 trains, up to float
    rounding: DDP averages two losses' gradients where one process sums four examples' at once, and
    a batch of 2 rounds its convolutions and reductions differently from a batch of 4.

    The tolerance, 1e-5, is a tenth of what one step can move a weight (AdamW moves each by about
    the learning rate, 1e-4): a single example, noise or timestep drawn differently moves weights
    by more. Measured: 7.5e-7 apart; with draws of each rank's own (before), 1.5e-3."""
    one = train(prefect_api_url, tmp_path, "--gpus", "1", "--batch-size", "4")
    assert one.returncode == 0, one.stderr[-3000:]
    expected, actual = weights(whole), weights(tmp_path)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-5,
                                   msg=lambda m: f"{name}: {m}")
