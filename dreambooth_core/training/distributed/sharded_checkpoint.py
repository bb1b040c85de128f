"""Checkpoints of a --shard run: every process writes its shards, rank 0 commits.

The state (trained weights, AdamW's moments, EMA) goes through torch.distributed.checkpoint
(DCP) into the checkpoint folder's `state/`: one file per process with its shards, and
DCP's `.metadata`, which says where each piece of each tensor is. That is what lets a
checkpoint written by N processes load on M: each process reads the pieces its own shards
need. The commit protocol is the store's own (session/checkpoints.py): the files first, then
MANIFEST.json, written by rank 0 with every file's size and sha256 (each process hashes
its own file). On loading, the processes share the hashing of the files between them.

Every process must reach the same storage: a local folder on one machine, or a bucket (gs://)
or shared file system for several.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist

from dreambooth_core.errors import StorageError
from dreambooth_core.session.checkpoints import Checkpoint, CheckpointStore, FileRecord
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import SHARDED_STATE, checkpoint_folder
from dreambooth_core.training.distributed.agreement import all_agree, rank_0s

STAGING_TAG = "sharded"  # every process must name the same staging folder


def is_sharded_checkpoint(files: dict) -> bool:
    return any(name.startswith(f"{SHARDED_STATE}/") for name in files)


def save(store: CheckpointStore, step: int, state: dict, meta: dict) -> None:
    """Commit `state` (a trainer's sharded_state()) at `step`; every process calls it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    rank, session = dist.get_rank(), store.session
    staging = store.staging_folder(step, STAGING_TAG)
    if rank == 0:  # what an interrupted save left
        session.remove(checkpoint_folder(step))
        session.remove(staging)
    dist.barrier()
    problem, files = None, {}
    try:
        dcp.save(state, storage_writer=_writer(session, f"{staging}/{SHARDED_STATE}"))
        files = {f"{SHARDED_STATE}/{name}": store.record(f"{staging}/{SHARDED_STATE}/{name}")
                 for name in _own_files(session, f"{staging}/{SHARDED_STATE}", rank)}
    except (OSError, CheckpointException) as exc:  # DCP's: every process's failures, on every process
        problem = f"rank {rank} could not write its shard: {exc}"
    written = [None] * dist.get_world_size()
    dist.all_gather_object(written, (problem, files))
    problems = [p for p, _ in written if p]
    if rank == 0 and not problems:
        files = {n: r for _, f in written for n, r in f.items()}
        problems = missing_shards(session, staging, files)
        try:
            if not problems:
                store.commit_written(step, staging, files, meta)
        except StorageError as exc:
            problems.append(str(exc))
    problems = rank_0s(problems)
    if problems:
        raise StorageError(f"the checkpoint at step {step} was not committed (the latest committed one is "
                           f"step {store.latest_step()}, intact): {problems[0]}")


def load(store: CheckpointStore, checkpoint: Checkpoint, state: dict) -> bool:
    """Load the sharded state of `checkpoint` into `state` (a trainer's sharded_state(), changed in
    place) once the processes verified its files; False, on every process, when a file does not
    match the manifest (the checkpoint is then uncommitted)."""
    import torch.distributed.checkpoint as dcp

    rank, world = dist.get_rank(), dist.get_world_size()
    manifest = store.manifest(checkpoint.step)  # None: another process found a bad file and uncommitted it
    names = sorted(n for n in manifest.files if n.startswith(f"{SHARDED_STATE}/")) if manifest else []
    if not all_agree(manifest is not None and store.verify(checkpoint.step, names[rank::world])):
        return False
    folder = f"{checkpoint_folder(checkpoint.step)}/{SHARDED_STATE}"
    dcp.load(state, storage_reader=_reader(store.session, folder))
    return True


def read_whole(session: Session, step: int, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under `prefix` ("weights", "ema") of the sharded state at `step`, whole, in this
    process alone (no process group): what exports read. {} when it holds none (no EMA)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = _reader(session, f"{checkpoint_folder(step)}/{SHARDED_STATE}")
    stored = reader.read_metadata().state_dict_metadata
    mark = f"{prefix}."
    whole = {key: torch.empty(meta.size, dtype=meta.properties.dtype) for key, meta in stored.items()
             if key.startswith(mark) and isinstance(meta, TensorStorageMetadata)}
    if not whole:
        return {}
    with warnings.catch_warnings():  # that no process group is in use: meant so
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(whole, storage_reader=reader, no_dist=True)
    return {key[len(mark):]: value for key, value in whole.items()}


def missing_shards(session: Session, staging: str, files: dict[str, FileRecord]) -> list[str]:
    """Why rank 0 cannot commit what the processes wrote: a file it does not see as written (another
    machine wrote it to a folder of its own, not to a storage they share)."""
    for name, record in sorted(files.items()):
        if not session.exists(f"{staging}/{name}") or session.size(f"{staging}/{name}") != record.size:
            return [f"{name}, written by another process, is not in {session.url} as rank 0 sees it: with "
                    "--shard every process writes its shards to the session storage, so machines must share "
                    "it (gs://, or a folder every machine mounts)"]
    return []


def _own_files(session: Session, folder: str, rank: int) -> list[str]:
    """The files DCP wrote for `rank` (`__<rank>_<n>.distcp`), and rank 0's .metadata."""
    names = [name.rsplit("/", 1)[-1] for name in session.fs.ls(session.path(folder), detail=False)]
    return sorted(n for n in names if n.startswith(f"__{rank}_") or (rank == 0 and n == ".metadata"))


def _writer(session: Session, folder: str):
    return _storage(session, folder, writes=True)


def _reader(session: Session, folder: str):
    return _storage(session, folder, writes=False)


def _storage(session: Session, folder: str, writes: bool):
    """DCP's writer or reader of `folder`: its file-system one on local disk, else its fsspec one,
    given the session's own file system (and so its credentials)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import _fsspec_filesystem as fsspec_storage

    if session.is_local:
        kind = dcp.FileSystemWriter if writes else dcp.FileSystemReader
        return kind(session.path(folder))
    kind = fsspec_storage.FsspecWriter if writes else fsspec_storage.FsspecReader
    storage = kind(session.fs.unstrip_protocol(session.path(folder)))
    storage.fs.fs = session.fs
    return storage
