"""Evaluation while training: the base model once before the first chunk, then the trainer's
own modules after every N chunks, into the same reports as `dreambooth evaluate`.

It never changes training: images are rendered under no_grad with their own seeded
generators, the modules' train/eval modes are restored, and with EMA on the UNet holds the
averaged weights only while it renders (the exact values are put back). The rows are those
`dreambooth evaluate` computes for the same step and settings, so either reuses the other's.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from pydantic import BaseModel, ConfigDict

from dreambooth_core.config import EvaluationSettings
from dreambooth_core.evaluation.evaluate import EvaluationSpec, evaluate_pipeline
from dreambooth_core.evaluation.judges import Judges, load_judges
from dreambooth_core.evaluation.report import BASE_STEP
from dreambooth_core.evaluation.session_evaluation import (
    EVALUATION_JSON,
    EvaluationReport,
    kept_rows,
    session_subjects,
    write_reports,
)
from dreambooth_core.generation.pipeline import build_pipeline
from dreambooth_core.generation.samples import samples_due
from dreambooth_core.session.folder import Session
from dreambooth_core.session.storage import SessionRef
from dreambooth_core.training.plan import Chunk
from dreambooth_core.training.trainer import Trainer


class TrainingEvaluation(BaseModel):
    """What the chunks need to evaluate: small, a task result."""

    model_config = ConfigDict(frozen=True)
    every: int
    judges: str  # "hub" or "tiny"
    judge_folders: tuple[str, str]  # DINO, CLIP
    face_model: str | None = None  # ArcFace's .onnx, when a subject is a person (face_identity.py)
    spec: EvaluationSpec
    subject_type: str = "auto"

    @property
    def settings(self) -> dict:
        """As `dreambooth evaluate` records them: rows of equal settings are shared."""
        return dataclasses.asdict(self.spec) | {"judges": self.judges}


def training_evaluation(settings: EvaluationSettings, judges: str, judge_folders: tuple[Path, Path],
                        resolution: int, subject_type: str, guidance_scale: float,
                        face_model: Path | None = None) -> TrainingEvaluation:
    spec = EvaluationSpec(resolution=resolution, prompts=settings.evaluation_prompts,
                          images_per_prompt=settings.evaluation_images,
                          inference_steps=settings.evaluation_inference_steps, guidance_scale=guidance_scale)
    return TrainingEvaluation(every=settings.evaluate_every, judges=judges, spec=spec,
                              subject_type=subject_type,
                              judge_folders=(str(judge_folders[0]), str(judge_folders[1])),
                              face_model=str(face_model) if face_model else None)


def evaluate_base_model(session: Session, model_path: str, evaluation: TrainingEvaluation,
                        device: torch.device,
                        log: logging.Logger = logging.getLogger("dreambooth")) -> None:
    """The base model's rows (step 0), unless measured already with these settings."""
    rows = kept_rows(session, evaluation.settings)
    if any(row.step == BASE_STEP for row in rows):
        return
    log.info("Evaluating the base model (step 0), for the evaluation while training")
    judges = evaluation_judges(evaluation)
    rows += evaluate_pipeline(build_pipeline(model_path, device), judges,
                              session_subjects(session, evaluation.subject_type), evaluation.spec, BASE_STEP)
    write_reports(session, rows, evaluation.settings)


def evaluation_judges(evaluation: TrainingEvaluation) -> Judges:
    face_model = Path(evaluation.face_model) if evaluation.face_model else None
    return load_judges(*map(Path, evaluation.judge_folders), face_model)


def evaluated_report(session: Session, step: int) -> EvaluationReport | None:
    """The report, if it has `step` (an evaluation ran after that chunk)."""
    if not session.exists(EVALUATION_JSON):
        return None
    report = EvaluationReport.model_validate(session.read_json(EVALUATION_JSON))
    return report if step in report.steps else None


@dataclass(frozen=True)
class EvaluationHook:
    """Evaluates a chunk's end with the trainer's own modules (rank 0, after the chunk)."""

    session: SessionRef
    model_path: str
    evaluation: TrainingEvaluation

    def __call__(self, trainer: Trainer, chunk: Chunk, log: logging.Logger) -> None:
        if not samples_due(self.evaluation.every, chunk):
            return
        session = self.session.open()
        rows = kept_rows(session, self.evaluation.settings)
        if any(row.step == chunk.end for row in rows):
            return
        log.info("Evaluating step %d", chunk.end)
        judges = evaluation_judges(self.evaluation)
        with averaged_denoiser(trainer), trainer.text_encoders_for_rendering():
            pipeline = build_pipeline(self.model_path, trainer.device, trainer.parts)
            rows += evaluate_pipeline(pipeline, judges,
                                      session_subjects(session, self.evaluation.subject_type),
                                      self.evaluation.spec, chunk.end)
        report = write_reports(session, rows, self.evaluation.settings)
        log.info("Evaluation at step %d: %s", chunk.end, report.recommendation.reason)


@contextmanager
def averaged_denoiser(trainer: Trainer) -> Iterator[None]:
    """With EMA on, the denoiser's trained weights are their average inside (as checkpoints export
    them), and exactly what they were after."""
    if trainer.ema is None:
        yield
        return
    parameters = trainer.trainables.denoiser
    kept = {name: p.detach().to("cpu", copy=True) for name, p in parameters.items()}
    with torch.no_grad():
        for name, p in parameters.items():
            p.copy_(trainer.ema[name])
    try:
        yield
    finally:
        with torch.no_grad():
            for name, p in parameters.items():
                p.copy_(kept[name])
