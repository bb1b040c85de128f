"""Checkpoint commits when host memory is short: no host copy of the state, same files."""

import logging

import pytest
import safetensors.torch
import torch
from test_trainer_resume import trainer

from dreambooth_core.session.checkpoints import CheckpointStore, read_tensor_file
from dreambooth_core.session.folder import Session
from dreambooth_core.training import chunk
from dreambooth_core.training.live import LiveTraining

CASE = dict(learning_rate=1e-4, text_encoder_steps=1, ema_decay=0.9)


def trained(model_path: str):
    t = trainer(model_path, "cpu", CASE)
    for step in range(2):
        t.step(step)
    return t


def test_a_commit_without_a_copy_writes_the_same_files_as_one_from_a_copy(tiny_model_path, tmp_path):
    t = trained(tiny_model_path)
    copied, live = (CheckpointStore(Session(str(tmp_path), name)) for name in ("copied", "live"))
    copied.save(2, t.state_writers(copy=True), meta={})
    live.save(2, t.state_writers(copy=False), meta={})
    a, b = copied.load_latest(), live.load_latest()
    assert a.files.keys() == b.files.keys() == {"weights.safetensors", "optimizer.pt", "ema.safetensors"}
    assert all(a.files[name] == b.files[name] for name in ("weights.safetensors", "ema.safetensors"))
    state_a, state_b = (read_tensor_file(c.files["optimizer.pt"])["optimizer"]["state"] for c in (a, b))
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k][n], state_b[k][n]) for k in state_a for n in state_a[k])
    weights = safetensors.torch.load(b.files["weights.safetensors"])
    assert all(torch.equal(weights[k], v) for k, v in t.trainables.named().items())
    assert t.state_bytes() == sum(v.numel() * v.element_size() for v in t.trainables.named().values()) * 3 + \
        sum(v.numel() * 4 for v in t.ema.values()) + 4 * len(t.optimizer.state)  # weights, 2 moments, EMA, steps


@pytest.mark.parametrize("available, background", [(2**40, True), (0, False)])
def test_the_commit_copies_only_when_host_memory_has_room(tiny_model_path, tmp_path, monkeypatch, caplog,
                                                          available, background):
    t = trained(tiny_model_path)
    monkeypatch.setattr(chunk, "available_host_bytes", lambda: available)  # this machine's RAM is not short
    store = CheckpointStore(Session(str(tmp_path), "s"))
    with LiveTraining() as live, caplog.at_level(logging.INFO):
        chunk.commit(live, store, t, 2, {}, logging.getLogger("test"))
        assert (live._thread is not None) == background
    assert store.latest_step() == 2
    assert ("without a copy" in caplog.text) == (not background)


def test_a_copy_needs_room_for_itself_and_a_margin():
    gib = 2**30
    assert chunk.copy_fits(4 * gib, 6 * gib)
    assert not chunk.copy_fits(4 * gib, 5 * gib)  # 4 GiB + a quarter + 1 GiB
