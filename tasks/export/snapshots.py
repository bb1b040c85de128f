"""Model snapshots every N steps: small fp16 files to compare and pick from, kept K at a time.

They are separate from the training state (checkpoints/) and never needed for resume:
a snapshot rewritten after a resume has the same content."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import torch

from tasks.export.embedding import export_embeddings
from tasks.export.lora import save_kohya_lora
from tasks.export.method_files import original_layout
from tasks.model.single_file import save_single_file
from tasks.session import Session
from tasks.training.methods import Trainables
from tasks.training.model_parts import ModelParts

FOLDER = "snapshots"
_STEP = re.compile(r"step-(\d{6,})")


def write_snapshot(session: Session, model_path: str, method: str, parts: ModelParts,
                   trainables: Trainables, step: int, keep: int) -> list[str]:
    """Write the snapshot at `step`, then delete all but the newest `keep` steps' files."""
    name = f"{session.name}-step-{step:06d}"
    with tempfile.TemporaryDirectory(prefix="dreambooth-snapshot-") as tmp:
        local = Path(tmp)
        _write_local(local, model_path, method, parts, trainables, name, step)
        files = sorted(p for p in local.rglob("*") if p.is_file())
        for file in files:
            session.put_file(file, f"{FOLDER}/step-{step:06d}/{file.relative_to(local).as_posix()}")
    _apply_retention(session, keep)
    return [f"{FOLDER}/step-{step:06d}/{f.relative_to(local).as_posix()}" for f in files]


@torch.no_grad()
def _write_local(out: Path, model_path: str, method: str, parts: ModelParts, trainables: Trainables,
                 name: str, step: int) -> None:
    if method == "lora":
        text_encoder = parts.text_encoder if trainables.text_encoder else None
        save_kohya_lora(parts.unet, text_encoder, out / f"{name}.safetensors", dtype=torch.float16)
    elif method == "textual-inversion":
        export_embeddings(trainables.token_vectors(torch.float16), out, step, write_pt=False)
    else:
        # The training modules stay fp32: the snapshot converts a copy of each tensor.
        state, metadata = original_layout(model_path, parts.unet, parts.vae, parts.text_encoder, name)
        state = {k: v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.cpu()
                 for k, v in state.items()}
        save_single_file(state, out / f"{name}.safetensors", "safetensors", step, metadata)


def snapshot_steps(session: Session) -> list[int]:
    return sorted(int(m.group(1)) for m in map(_STEP.fullmatch, session.list(FOLDER)) if m)


def _apply_retention(session: Session, keep: int) -> None:
    for step in snapshot_steps(session)[:-keep]:
        session.remove(f"{FOLDER}/step-{step:06d}")
