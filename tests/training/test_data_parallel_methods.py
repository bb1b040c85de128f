"""DDP under every method that trains something else (text encoder phase, accumulation,
LoRA of the text encoder, textual inversion's embedding): two CPU processes stay equal,
and saving, loading and continuing equals training straight through, as with one."""

import socket

import pytest
import torch
import torch.multiprocessing as mp
from test_trainer_resume import CASES, KILLED_AT, STEPS, examples, trained_values

from dreambooth_core.config import RuntimeSettings, TrainingSettings
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.families import load_model_parts
from dreambooth_core.training.trainer import Trainer

pytestmark = pytest.mark.slow  # two spawned processes per case

DDP_CASES = ["phase ends after resume", "prior, flip, min-snr, offset noise, batch 2, accumulation 2, cosine",
             "lora", "textual inversion"]


def two_process_trainer(model_path: str, case: dict, rank: int, world: int = 2) -> Trainer:
    settings = TrainingSettings(seed=3, **{"text_encoder_steps": 0, **{k: v for k, v in case.items() if k != "runtime"}})
    instances, classes = examples(prior=settings.batch_size > 1)
    return Trainer(load_model_parts(model_path, torch.device("cpu")), instances, settings, total_steps=STEPS,
                   runtime=case.get("runtime", RuntimeSettings()), class_examples=classes, rank=rank, world=world)


def train_and_resume(rank: int, model_path: str, case: str, port: int, folder: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        straight = two_process_trainer(model_path, CASES[case], rank)
        for step in range(STEPS):
            straight.step(step)
        first = two_process_trainer(model_path, CASES[case], rank)
        for step in range(KILLED_AT):
            first.step(step)
        store = CheckpointStore(Session(folder, f"rank{rank}"))
        store.save(KILLED_AT, first.state_writers(), meta={})
        del first
        resumed = two_process_trainer(model_path, CASES[case], rank)
        resumed.load_state(store.load_latest())
        for step in range(KILLED_AT, STEPS):
            resumed.step(step)
        torch.save({"straight": trained_values(straight), "resumed": trained_values(resumed)},
                   f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", DDP_CASES)
def test_two_processes_stay_equal_and_resume_exactly(tiny_model_path, tmp_path, case):
    mp.start_processes(train_and_resume, args=(tiny_model_path, case, free_port(), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    base = trained_values(two_process_trainer(tiny_model_path, CASES[case], 0, world=1))  # untrained
    expected = ranks[0]["straight"]
    assert any(not torch.equal(expected[k], base[k]) for k in expected), "training changed nothing"
    for values in (ranks[1]["straight"], ranks[0]["resumed"], ranks[1]["resumed"]):
        different = [k for k in expected if not torch.equal(expected[k], values[k])]
        assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
