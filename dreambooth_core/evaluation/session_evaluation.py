"""Evaluating a session's steps: the base model (step 0) once, then each step asked for,
from its committed checkpoint or snapshot; the rows go to reports/evaluation.csv, the plot
to reports/evaluation.png and the recommendation, with its rule and the settings the
images were made with, to reports/evaluation.json.

Rows made with other settings (prompt count, images, seed, size, judges) cannot be
compared with new ones: they are dropped and their steps evaluated again when asked.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import tempfile
from pathlib import Path

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict

from dreambooth_core.evaluation.evaluate import EvaluationSpec, Subject, evaluate_pipeline
from dreambooth_core.evaluation.judges import Judges
from dreambooth_core.evaluation.prompts import is_live
from dreambooth_core.evaluation.report import (
    BASE_STEP,
    MetricRow,
    Recommendation,
    evaluation_csv_text,
    evaluation_plot_png,
    read_evaluation,
    recommend_step,
    step_scores,
)
from dreambooth_core.export.step_export import TrainedSession, require_step, step_parts
from dreambooth_core.generation.pipeline import build_pipeline
from dreambooth_core.photos.validate import is_person
from dreambooth_core.session.dataset_manifest import require_dataset_manifest
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import EVALUATION_CSV, EVALUATION_PNG, REPORTS

EVALUATION_JSON = f"{REPORTS}/evaluation.json"


class EvaluationReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    settings: dict  # EvaluationSpec's fields and the judges
    recommendation: Recommendation
    steps: list[int]


def session_subjects(session: Session, subject_type: str = "auto") -> list[Subject]:
    """Each token's class word and prepared photos, from the dataset manifest."""
    manifest = require_dataset_manifest(session)
    subjects = []
    for token, record in sorted(manifest.subjects.items()):
        photos = [Image.open(io.BytesIO(session.read_bytes(item.file))).convert("RGB")
                  for item in manifest.items if item.token == token]
        word = record.class_word or "person"
        subjects.append(Subject(token, word, is_live(record.class_word, subject_type), photos,
                                is_person(record.class_word, subject_type)))
    return subjects


def has_person(session: Session, subject_type: str = "auto") -> bool:
    """Whether a subject is a person (face identity is then measured, and its model fetched)."""
    return any(is_person(record.class_word, subject_type)
               for record in require_dataset_manifest(session).subjects.values())


def evaluate_session(session: Session, trained: TrainedSession, steps: list[int], judges: Judges,
                     judges_name: str, spec: EvaluationSpec, subject_type: str = "auto",
                     device: torch.device = torch.device("cpu"),
                     log: logging.Logger = logging.getLogger("dreambooth")) -> EvaluationReport:
    sources = {step: require_step(session, step) for step in steps}  # every step checked first
    settings = dataclasses.asdict(spec) | {"judges": judges_name}
    rows = kept_rows(session, settings)
    subjects = session_subjects(session, subject_type)
    done = {row.step for row in rows}
    for step in [BASE_STEP, *steps]:
        if step in done:
            continue
        log.info("Evaluating %s", "the base model" if step == BASE_STEP else f"step {step}")
        with tempfile.TemporaryDirectory(prefix="dreambooth-evaluate-") as scratch:
            pipeline = step_pipeline(session, trained, step, sources.get(step), Path(scratch), device)
            rows += evaluate_pipeline(pipeline, judges, subjects, spec, step)
        done.add(step)
        write_reports(session, rows, settings)
    return write_reports(session, rows, settings)


def step_pipeline(session: Session, trained: TrainedSession, step: int, source: str | None, scratch: Path,
                  device: torch.device):
    if step == BASE_STEP:
        return build_pipeline(trained.model_path, device)
    parts, _ = step_parts(session, trained, step, source, scratch)
    parts.to(device)
    return build_pipeline(trained.model_path, device, parts)


def kept_rows(session: Session, settings: dict) -> list[MetricRow]:
    """The rows already there, if they were made with these settings."""
    if not session.exists(EVALUATION_JSON):
        return []
    if session.read_json(EVALUATION_JSON).get("settings") != settings:
        return []
    return read_evaluation(session)


def write_reports(session: Session, rows: list[MetricRow], settings: dict) -> EvaluationReport:
    scores = step_scores(rows)
    base = scores.get(BASE_STEP)
    trained = [s for step, s in scores.items() if step != BASE_STEP]
    recommendation = recommend_step(trained, base.clip_t if base else 0.0)
    report = EvaluationReport(settings=settings, recommendation=recommendation, steps=sorted(scores))
    session.write_bytes(EVALUATION_CSV, evaluation_csv_text(rows).encode())
    session.write_bytes(EVALUATION_PNG, evaluation_plot_png(rows, recommendation, f"session {session.name}"))
    session.write_json(EVALUATION_JSON, report.model_dump(mode="json"))
    return report


def evaluation_markdown(session_name: str, report: EvaluationReport) -> str:
    """The recommendation, its rule and the settings, for the Prefect UI (above the plot)."""
    settings = ", ".join(f"{name} {value}" for name, value in report.settings.items())
    return "\n".join([
        f"# Evaluation of session {session_name}", "",
        f"Steps measured: {', '.join(map(str, report.steps))} (0: the base model).", "",
        f"**Recommended: {report.recommendation.reason}.**", "",
        f"Rule: {report.recommendation.rule}.", "",
        "Lines: subject fidelity (DINO, CLIP-I: likeness to the prepared photos) and prompt fidelity "
        "(CLIP-T) against step; dashed: the recommended step. Full figures: reports/evaluation.csv.", "",
        f"Settings: {settings}.", ""])
