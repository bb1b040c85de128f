"""Sample grids and evaluation rows a stopped run did not make, made by the next run.

Samples and the evaluation of a chunk's end are rendered after its checkpoint commits. A run
killed while rendering them leaves the checkpoint, so the next run finds the chunk trained and
goes on: without this, the step's grid (samples/step-NNNNNN.png, written last) or its rows in
reports/evaluation.csv would be missing for good once checkpoint rotation removes the step.
Before training resumes, every chunk end up to the last committed step that was due for them
and lacks them is rendered from its checkpoint (or snapshot) while one is kept, with a warning.
The images are those the chunk would have made: samples from the UNet as trained, evaluation
with EMA applied, as the hooks do (generation/samples.py, training_evaluation.py).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch

from dreambooth_core.evaluation.evaluate import evaluate_pipeline
from dreambooth_core.evaluation.session_evaluation import (
    kept_rows,
    session_subjects,
    step_pipeline,
    write_reports,
)
from dreambooth_core.evaluation.training_evaluation import TrainingEvaluation, evaluation_judges
from dreambooth_core.export.step_export import TrainedSession, exportable_steps, step_parts
from dreambooth_core.generation.samples import SampleSpec, render_samples, samples_due
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import EVALUATION_CSV, samples_grid
from dreambooth_core.training.devices import resolve_device
from dreambooth_core.training.plan import TrainingPlan


def rebuild_missed_steps(session: Session, plan: TrainingPlan, samples: SampleSpec | None, sample_every: int,
                         evaluation: TrainingEvaluation | None, log: logging.Logger) -> list[int]:
    """Render the missed sample grids and evaluation rows of the plan's trained steps; returns
    the steps rendered. `samples`/`evaluation`: None when off."""
    sources = exportable_steps(session)  # a step whose checkpoint and snapshot are gone is left as it is
    evaluated = {row.step for row in kept_rows(session, evaluation.settings)} if evaluation else set()
    trained = TrainedSession.of(plan)
    device = resolve_device(plan.runtime.device)
    rebuilt = []
    for chunk in (c for c in plan.chunks if c.end <= plan.resume_step and c.end in sources):
        step, source = chunk.end, sources[chunk.end]
        grid = (samples is not None and samples_due(sample_every, chunk)
                and not session.exists(samples_grid(step)))
        rows = evaluation is not None and samples_due(evaluation.every, chunk) and step not in evaluated
        if not (grid or rows):
            continue
        missed = [samples_grid(step)] if grid else []
        missed += [f"its rows in {EVALUATION_CSV}"] if rows else []
        log.warning("Step %d: %s missing (a run stopped while rendering them?); rendering them from its %s",
                    step, " and ".join(missed), source)
        if grid:
            _render_samples(session, trained, step, source, samples, device, log)
        if rows:
            _evaluate(session, trained, step, source, evaluation, device)
        rebuilt.append(step)
    return rebuilt


def _render_samples(session: Session, trained: TrainedSession, step: int, source: str, spec: SampleSpec,
                    device: torch.device, log: logging.Logger) -> None:
    with tempfile.TemporaryDirectory(prefix="dreambooth-samples-") as scratch:
        parts, _ = step_parts(session, trained, step, source, Path(scratch), use_ema=False)
        parts.to(device)
        render_samples(session, step, trained.model_path, spec, device, parts, log)


def _evaluate(session: Session, trained: TrainedSession, step: int, source: str,
              evaluation: TrainingEvaluation, device: torch.device) -> None:
    judges = evaluation_judges(evaluation)
    with tempfile.TemporaryDirectory(prefix="dreambooth-evaluate-") as scratch:
        pipeline = step_pipeline(session, trained, step, source, Path(scratch), device)  # as `evaluate` does
        rows = evaluate_pipeline(pipeline, judges, session_subjects(session, evaluation.subject_type),
                                 evaluation.spec, step)
    write_reports(session, kept_rows(session, evaluation.settings) + rows, evaluation.settings)
