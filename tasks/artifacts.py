"""Prefect artifacts that show a session in the UI: training progress, images, the summary.

What they say is made by the plain library (dreambooth_core.reports); this module
only talks to Prefect, through `ui_call`: training never waits on the API (prefect_api.py),
so each call returns None when the API does not answer.
"""

from __future__ import annotations

import re
from typing import Callable
from uuid import UUID

from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from dreambooth_core.reports.images import image_link, image_markdown
from dreambooth_core.reports.monitor import ChunkReport, Progress
from dreambooth_core.reports.status import RunFacts, session_status, summary_markdown
from dreambooth_core.session.folder import Session
from dreambooth_core.session.storage import SessionRef
from dreambooth_core.training.plan import TrainingPlan
from tasks.prefect_api import ui_call


def artifact_key(kind: str, session: str) -> str:
    """The Prefect artifact key of a session's report; keys allow lowercase letters, digits, dashes."""
    return f"{kind}-" + re.sub(r"[^a-z0-9-]+", "-", session.lower())


def publish_markdown(markdown: str, key: str, description: str) -> UUID | None:
    """A Markdown artifact under `key`, when the API answers."""
    return ui_call(create_markdown_artifact, markdown, key=key, description=description)


def publish_image(session: Session, relative: str, key: str, description: str,
                  text: str | None = None) -> UUID | None:
    """Show session image `relative` (PNG/JPEG) in the UI: a Markdown artifact under `key`
    holding `text` (default: `description` as its heading), then the image, then its location.

    The image is a public or signed link where the storage allows, else embedded
    (dreambooth_core/reports/images.py): the UI's browser cannot read local files or private buckets."""
    markdown = image_markdown(f"# {description}\n" if text is None else text,
                              image_link(session, relative), description, f"{session.url}/{relative}")
    return publish_markdown(markdown, key, description)


def start_training_progress(plan: TrainingPlan) -> UUID | None:
    """The run's progress artifact, at the step training resumes from."""
    done, total = min(plan.resume_step, plan.total_steps), plan.total_steps
    progress = Progress(done, total, done, done, 0.0, None)
    return ui_call(create_progress_artifact, progress.percent,
                   key=artifact_key("training", plan.session.name),
                   description=f"Training {plan.session.name}: {progress.text()}")


def progress_updater(artifact_id: UUID | None, session: str) -> Callable[[Progress], None]:
    def update(progress: Progress) -> None:
        if artifact_id is not None:
            ui_call(update_progress_artifact, artifact_id, progress.percent,
                    description=f"Training {session}: {progress.text()}")
    return update


def loss_plot_publisher(session: Session) -> Callable[[ChunkReport], None]:
    def publish(report: ChunkReport) -> None:
        title = f"Training loss of {session.name}, steps 1-{report.end} of {report.total}"
        publish_image(session, report.plot, artifact_key("loss", session.name), title,
                      f"# {title}\n\nPoints: each step's loss. Line: smoothed. Dashed: committed "
                      "checkpoints.\n")
    return publish


def publish_summary(ref: SessionRef, run: RunFacts, progress: UUID | None = None) -> UUID | None:
    session = ref.open()
    status = session_status(session)
    if progress is not None:
        ui_call(update_progress_artifact, progress, 100.0 if status.state == "complete" else
                100.0 * status.latest_step / max(status.total_steps or 1, 1),
                description=f"Training {session.name}: {status.state}, "
                            f"{status.latest_step}/{status.total_steps} steps")
    return publish_markdown(summary_markdown(status, run), artifact_key("summary", session.name),
                            f"Summary of session {session.name}")
