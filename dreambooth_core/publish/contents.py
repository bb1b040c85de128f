"""What a publish puts in the repo: the session's final outputs or one exported step's files, the
sample grid of that step, and the evaluation table and plot when there are any.

The full model's diffusers folder goes to the root of the repo, where
`DiffusionPipeline.from_pretrained("USER/NAME")` looks; every other file keeps its name.
"""

from __future__ import annotations

import posixpath

from pydantic import BaseModel, ConfigDict

from dreambooth_core.errors import SessionError
from dreambooth_core.evaluation.report import read_evaluation
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import (
    DIFFUSERS,
    EVALUATION_CSV,
    EVALUATION_PNG,
    LOSS_PNG,
    SAMPLES,
    export_folder,
    samples_grid,
    steps_named,
)
from dreambooth_core.session.state import existing_state, present_export

CARD = "README.md"


class PublishedFiles(BaseModel):
    model_config = ConfigDict(frozen=True)
    step: int
    files: dict[str, str]  # path in the repo -> session-relative path
    sample_grid: str | None  # path in the repo
    evaluation: bool  # whether reports/evaluation.csv and .png are among the files


def published_files(session: Session, step: int | None) -> PublishedFiles:
    """The files of the final outputs (`step` None) or of exports/step-NNNNNN/."""
    if step is None:
        step, models = _final_outputs(session)
    else:
        models = _exported_step(session, step)
    extras: dict[str, str] = {}
    grid = _sample_grid(session, step)
    if grid:
        extras[grid] = grid
    evaluated = bool(read_evaluation(session)) and session.exists(EVALUATION_PNG)
    if evaluated:
        extras |= {EVALUATION_CSV: EVALUATION_CSV, EVALUATION_PNG: EVALUATION_PNG}
    if session.exists(LOSS_PNG):
        extras[LOSS_PNG] = LOSS_PNG
    return PublishedFiles(step=step, files=models | extras, sample_grid=grid, evaluation=evaluated)


def _final_outputs(session: Session) -> tuple[int, dict[str, str]]:
    state = existing_state(session)
    if present_export(session, state) is None:
        raise SessionError(f"session {session.name!r} has no final outputs to publish yet: finish its "
                           f"training (dreambooth train --session {session.name}), or publish a kept "
                           "step with --step N (dreambooth status lists them).")
    files = {path: path for path in state.outputs}
    return state.export.step, files | _folder_files(session, DIFFUSERS, "")


def _exported_step(session: Session, step: int) -> dict[str, str]:
    folder = export_folder(step)
    if not session.exists(folder):
        raise SessionError(f"session {session.name!r} has no export of step {step} ({folder}/). "
                           f"Export it first: dreambooth export --session {session.name} --step "
                           f"{step}")
    files = _folder_files(session, folder, "")
    moved = _folder_files(session, f"{folder}/{DIFFUSERS}", "")
    return {path: source for path, source in files.items() if not path.startswith(f"{DIFFUSERS}/")} | moved


def _folder_files(session: Session, folder: str, prefix: str) -> dict[str, str]:
    """Every file under `folder`, keyed by its path below it (after `prefix`)."""
    if not session.exists(folder):
        return {}
    root = session.path(folder)
    inside = [posixpath.relpath(path, root) for path in sorted(session.fs.find(root))]
    return {posixpath.join(prefix, path): posixpath.join(folder, path) for path in inside}


def _sample_grid(session: Session, step: int) -> str | None:
    """The grid of `step`, else of the newest sampled step before it."""
    names = [name.removesuffix(".png") for name in session.list(SAMPLES) if name.endswith(".png")]
    sampled = [s for s in steps_named(names) if s <= step]
    return samples_grid(sampled[-1]) if sampled else None
