"""Prefect artifacts that show a session in the UI: training progress, images, the summary.

Plain reporting code lives in tasks/reports/; this module only talks to Prefect.
"""

from __future__ import annotations

from typing import Callable
from uuid import UUID

from prefect.artifacts import (create_image_artifact, create_markdown_artifact,
                               create_progress_artifact, update_progress_artifact)

from tasks.reports.images import image_link, image_markdown
from tasks.reports.monitor import ChunkReport, Progress
from tasks.reports.status import session_status
from tasks.reports.summary import RunFacts, summary_markdown
from tasks.session import Session
from tasks.session_state import SessionRef, artifact_key
from tasks.training.plan import TrainingPlan


def publish_image(session: Session, relative: str, key: str, description: str,
                  text: str = "") -> UUID:
    """Show session file `relative` (PNG/JPEG) in the UI under artifact `key`.

    A public or signed URL becomes an image artifact; otherwise the image is embedded in a
    Markdown artifact (the UI's browser cannot read local files or private buckets)."""
    link = image_link(session, relative)
    location = f"{session.url}/{relative}"
    if link.how != "embedded":
        note = f"; {link.note}" if link.note else ""
        return create_image_artifact(link.url, key=key, description=f"{description} ({location}{note})")
    return create_markdown_artifact(image_markdown(description, link, location, text), key=key,
                                    description=description)


def start_training_progress(plan: TrainingPlan) -> UUID:
    """The run's progress artifact, at the step training resumes from."""
    done, total = min(plan.resume_step, plan.total_steps), plan.total_steps
    progress = Progress(done, total, done, done, 0.0, None)
    return create_progress_artifact(progress.percent, key=artifact_key("training", plan.session.name),
                                    description=f"Training {plan.session.name}: {progress.text()}")


def progress_updater(artifact_id: UUID | None, session: str) -> Callable[[Progress], None]:
    def update(progress: Progress) -> None:
        if artifact_id is not None:
            update_progress_artifact(artifact_id, progress.percent,
                                     description=f"Training {session}: {progress.text()}")
    return update


def loss_plot_publisher(session: Session) -> Callable[[ChunkReport], None]:
    def publish(report: ChunkReport) -> None:
        publish_image(session, report.plot, artifact_key("loss", session.name),
                      f"Training loss of {session.name}, steps 1-{report.end} of {report.total}",
                      "Points: each step's loss. Line: smoothed. Dashed: committed checkpoints.")
    return publish


def publish_summary(ref: SessionRef, run: RunFacts, progress: UUID | None = None) -> UUID:
    session = ref.open()
    status = session_status(session)
    if progress is not None:
        update_progress_artifact(progress, 100.0 if status.state == "complete" else
                                 100.0 * status.latest_step / max(status.total_steps or 1, 1),
                                 description=f"Training {session.name}: {status.state}, "
                                             f"{status.latest_step}/{status.total_steps} steps")
    return create_markdown_artifact(summary_markdown(status, run), key=artifact_key("summary", session.name),
                                    description=f"Summary of session {session.name}")
