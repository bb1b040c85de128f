"""--shard at the trainer level: FSDP2 over two CPU processes (gloo) trains what one process
trains with the whole batch, and its sharded checkpoint resumes exactly on two processes and,
with the same whole batch, on one or three."""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from dreambooth_core.config import RuntimeSettings, TrainingSettings
from dreambooth_core.families import load_model_parts
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.training.chunk import load_checkpoint
from dreambooth_core.training.distributed import sharded_checkpoint
from dreambooth_core.training.trainer import Example, Trainer

pytestmark = pytest.mark.slow  # spawned processes

STEPS, KILLED_AT = 6, 3
WHOLE_BATCH = 6
# Accumulation: FSDP2 keeps whole gradients until the last micro-batch; checkpointing: recomputed blocks.
SETTINGS = dict(seed=3, learning_rate=1e-4, text_encoder_steps=0, ema_decay=0.9, flip=True,
                gradient_accumulation=2)
RUNTIME = RuntimeSettings(gradient_checkpointing=True)


def trainer(model_path: str, rank: int, world: int, **extra) -> Trainer:
    settings = TrainingSettings(**SETTINGS, batch_size=WHOLE_BATCH // world, gpus=world,
                                shard=world > 1, **extra)
    return Trainer(load_model_parts(model_path, torch.device("cpu")), examples(), settings, total_steps=STEPS,
                   runtime=RUNTIME, rank=rank, world=world)


def examples() -> list[Example]:
    pixels = [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(3)]
    return [Example(p, "photo of shrk man", "shrk") for p in pixels]


def whole_values(t: Trainer) -> dict[str, torch.Tensor]:
    """Every trained tensor whole (gathered from the shards), EMA's too."""
    from torch.distributed.tensor import DTensor

    def whole(v): return (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu().clone()
    return {k: whole(v) for k, v in t.trainables.named().items()} | {f"ema.{k}": whole(v) for k, v in t.ema.items()}


def in_group(rank: int, world: int, port: int, work, *args) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        work(rank, world, *args)
    finally:
        dist.destroy_process_group()


def train_save_and_resume(rank: int, world: int, model_path: str, folder: str, storage: str | None = None) -> None:
    """`storage`: where the session is (default: `folder`, where the results go)."""
    straight = trainer(model_path, rank, world)
    for step in range(STEPS):
        straight.step(step)
    first = trainer(model_path, rank, world)
    for step in range(KILLED_AT):
        first.step(step)
    store = CheckpointStore(Session(storage or folder, "sharded"))
    sharded_checkpoint.save(store, KILLED_AT, first.sharded_state(), meta={})
    largest = max(first.trainables.named().values(), key=lambda w: w.numel())
    assert largest.to_local().shape[0] == -(-largest.shape[0] // world)  # this process holds its share
    values = {"straight": whole_values(straight)}
    del first
    resumed = trainer(model_path, rank, world)
    assert load_checkpoint(resumed, store, store.load_latest())
    for step in range(KILLED_AT, STEPS):
        resumed.step(step)
    values["resumed"] = whole_values(resumed)
    if rank == 0:
        torch.save(values, f"{folder}/world{world}.pt")


def resume_elsewhere(rank: int, world: int, model_path: str, folder: str) -> None:
    store = CheckpointStore(Session(folder, "sharded"))
    resumed = trainer(model_path, rank, world)
    assert load_checkpoint(resumed, store, store.load_latest())
    for step in range(KILLED_AT, STEPS):
        resumed.step(step)
    values = whole_values(resumed)  # gathering is a collective: every process takes part
    if rank == 0:
        torch.save(values, f"{folder}/resumed-on-{world}.pt")


def spawn(work, world: int, *args) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(in_group, args=(world, port, work, *args), nprocs=world, start_method="spawn")


def differing(expected: dict, values: dict, tolerance: float = 0.0) -> list[str]:
    return [k for k in expected if not torch.allclose(expected[k], values[k], rtol=0, atol=tolerance)]


@pytest.fixture(params=["tiny", "tiny-flux"])
def model_path(request, tiny_model_path) -> str:
    """A UNet, and a transformer whose blocks FSDP2 warns about (outputs that are views)."""
    if request.param == "tiny":
        return tiny_model_path
    from dreambooth_core.families.base_model import fetch_model

    return fetch_model(request.param, Path(os.environ["DREAMBOOTH_CACHE"])).path


def test_sharded_training_resumes_exactly_and_on_another_number_of_processes(model_path, tmp_path):
    spawn(train_save_and_resume, 2, model_path, str(tmp_path))
    two = torch.load(tmp_path / "world2.pt", weights_only=True)
    one = trainer(model_path, 0, 1)
    untrained = whole_values(one)
    for step in range(STEPS):
        one.step(step)
    expected = whole_values(one)  # one process, the whole batch, not sharded
    assert differing(untrained, expected), "training changed nothing"
    assert not differing(two["straight"], two["resumed"]), "resuming on the same processes is not exact"
    assert not differing(expected, two["straight"], 1e-5), "two sharded processes train another model"

    spawn(resume_elsewhere, 3, model_path, str(tmp_path))
    three = torch.load(tmp_path / "resumed-on-3.pt", weights_only=True)
    assert not differing(two["straight"], three, 1e-5), "resumed on three processes: another model"


def fall_back_past_a_damaged_shard(rank: int, world: int, model_path: str, folder: str) -> None:
    store = CheckpointStore(Session(folder, "damaged"))
    first = trainer(model_path, rank, world)
    first.step(0)
    sharded_checkpoint.save(store, 1, first.sharded_state(), meta={})
    at_one = whole_values(first)
    first.step(1)
    sharded_checkpoint.save(store, 2, first.sharded_state(), meta={})
    if rank == 0:
        shard = Path(folder) / "damaged" / "checkpoints" / "step-000002" / "state" / "__1_0.distcp"
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    torch.distributed.barrier()
    resumed = trainer(model_path, rank, world)
    # the process that hashes the damaged file answers for all of them
    refused = not load_checkpoint(resumed, store, store.load_latest())
    fallback = store.load_latest()
    assert load_checkpoint(resumed, store, fallback)
    values = whole_values(resumed)
    if rank == 0:
        torch.save({"refused": refused, "fallback": fallback.step, "at_one": at_one, "loaded": values},
                   f"{folder}/fallback.pt")


def test_a_damaged_shard_uncommits_its_checkpoint_and_every_process_loads_the_one_before(tiny_model_path,
                                                                                          tmp_path):
    spawn(fall_back_past_a_damaged_shard, 2, tiny_model_path, str(tmp_path))
    result = torch.load(tmp_path / "fallback.pt", weights_only=True)
    assert result["refused"] and result["fallback"] == 1
    assert not differing(result["at_one"], result["loaded"])


def test_shards_are_written_to_and_resumed_from_a_bucket(tiny_model_path, tmp_path, gcs_bucket):
    """gs:// through DCP's fsspec writer and reader, given the session's own file system."""
    import gcsfs

    spawn(train_save_and_resume, 2, tiny_model_path, str(tmp_path), f"{gcs_bucket}/sessions")
    two = torch.load(tmp_path / "world2.pt", weights_only=True)
    assert not differing(two["straight"], two["resumed"])
    fs = gcsfs.GCSFileSystem(token="anon")
    state = f"{gcs_bucket[5:]}/sessions/sharded/checkpoints/step-{KILLED_AT:06d}/state"
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(state)) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
