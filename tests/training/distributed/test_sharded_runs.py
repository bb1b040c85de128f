"""--gpus N --shard through the command: every process writes its shards of each checkpoint, the
final export is the whole model, and a run killed after a commit resumes exactly, or on four
processes with the same whole batch."""

import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_data_parallel import committed, error_paragraph, paused_in_step_5, train

from dreambooth_core.session.folder import Session
from dreambooth_core.training.distributed.sharded_checkpoint import read_whole

pytestmark = pytest.mark.slow  # CLI runs of several processes


def trained(root: Path, step: int = 8) -> dict[str, torch.Tensor]:
    return read_whole(Session(str(root / "sessions"), "s"), step, "weights")


def differing(expected: dict, actual: dict, tolerance: float = 0.0) -> list[str]:
    assert expected.keys() == actual.keys()
    return [k for k in expected if not torch.allclose(expected[k], actual[k], rtol=0, atol=tolerance)]


@pytest.fixture(scope="module")
def sharded(prefect_api_url, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sharded")
    result = train(prefect_api_url, root, "--shard", "--ema-decay", "0.9")
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_each_process_writes_its_shards_and_the_export_is_the_whole_model(sharded):
    checkpoint = sharded / "sessions" / "s" / "checkpoints" / "step-000008"
    assert sorted(p.name for p in (checkpoint / "state").iterdir()) == [".metadata", "__0_0.distcp",
                                                                       "__1_0.distcp"]
    assert not (checkpoint / "weights.safetensors").exists()
    exported = load_file(sharded / "sessions" / "s" / "diffusers" / "unet" / "diffusion_pytorch_model.safetensors")
    averaged = read_whole(Session(str(sharded / "sessions"), "s"), 8, "ema")  # the export is EMA's
    assert exported.keys() == averaged.keys()
    assert not differing({k: v.to(exported[k].dtype) for k, v in averaged.items()}, exported)


def test_a_killed_sharded_run_resumes_exactly_and_on_four_processes(prefect_api_url, sharded, tmp_path):
    manifest = tmp_path / "sessions" / "s" / "checkpoints" / "step-000004" / "MANIFEST.json"
    crashed = train(prefect_api_url, tmp_path, "--shard", "--ema-decay", "0.9",
                    DREAMBOOTH_KILL_RANK=f"1:5:{manifest}")  # in the second chunk
    assert crashed.returncode == 2, crashed.stderr[-3000:]
    assert error_paragraph(crashed.stderr).startswith(
        "error: training stopped: training process rank 1 of 2 was killed by SIGKILL")
    assert committed(tmp_path) == ["step-000004"]
    four = tmp_path / "four"
    shutil.copytree(tmp_path / "sessions", four / "sessions")

    resumed = train(prefect_api_url, tmp_path, "--shard", "--ema-decay", "0.9")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "rank 1 | Resuming from committed checkpoint at step 4" in resumed.stderr
    assert not differing(trained(sharded), trained(tmp_path))

    elsewhere = train(prefect_api_url, four, "--shard", "--ema-decay", "0.9", "--gpus", "4", "--batch-size", "1")
    assert elsewhere.returncode == 0, elsewhere.stderr[-3000:]
    assert "rank 3 | Resuming from committed checkpoint at step 4" in elsewhere.stderr
    assert not differing(trained(sharded), trained(four), 1e-5)


def test_a_sigterm_to_one_process_commits_every_processs_shards_at_the_same_step(prefect_api_url, tmp_path):
    marker = tmp_path / "in-step"
    process, rank_1 = paused_in_step_5(prefect_api_url, tmp_path, marker, "--shard", "--ema-decay", "0.9")
    os.kill(rank_1, signal.SIGTERM)
    marker.unlink()
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 2, stderr[-3000:]
    assert "step 6 is committed. Run the same command again to resume from it." in error_paragraph(stderr)
    assert committed(tmp_path) == ["step-000004", "step-000006"]
    state = tmp_path / "sessions" / "s" / "checkpoints" / "step-000006" / "state"
    assert sorted(p.name for p in state.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    # (A rerun resumes from it as from any sharded checkpoint: the test above.)


def test_a_damaged_shard_is_never_exported(sharded, tmp_path):
    from dreambooth_core.export.step_export import committed_weights

    shutil.copytree(sharded / "sessions", tmp_path / "sessions")
    shard = tmp_path / "sessions" / "s" / "checkpoints" / "step-000004" / "state" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    session = Session(str(tmp_path / "sessions"), "s")
    assert committed_weights(session, 8) is not None
    assert committed_weights(session, 4) is None
    assert committed(tmp_path) == ["step-000008"]  # uncommitted: a resume falls back past it


def test_shards_written_to_another_machines_own_folder_are_named_not_committed(tmp_path):
    from dreambooth_core.session.checkpoints import FileRecord
    from dreambooth_core.training.distributed.sharded_checkpoint import missing_shards

    session = Session(str(tmp_path), "s")
    session.write_bytes("checkpoints/.tmp/state/__0_0.distcp", b"0123")
    files = {"state/__0_0.distcp": FileRecord(size=4, sha256="-"), "state/__1_0.distcp": FileRecord(size=4, sha256="-")}
    problem, = missing_shards(session, "checkpoints/.tmp", files)
    assert problem.startswith("state/__1_0.distcp, written by another process, is not in ")
    assert "machines must share it" in problem
    assert missing_shards(session, "checkpoints/.tmp", {"state/__0_0.distcp": files["state/__0_0.distcp"]}) == []
