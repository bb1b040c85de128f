"""@task: train one chunk of steps and commit its checkpoint; show its samples."""

from uuid import UUID

from prefect import get_run_logger, task

from tasks.config import Chunk, digest
from tasks.generation.samples import Samples, samples_markdown
from tasks.reports.monitor import TrainingMonitor
from tasks.session import Session
from tasks.session_state import artifact_key
from tasks.training.plan import TrainingPlan
from tasks.training.run import ChunkOutcome, train_chunk_steps
from tasks.ui_artifacts import loss_plot_publisher, progress_updater, publish_image


def _cache_key(context, p) -> str:
    return digest(["chunk", p["plan"].session.uid, p["plan"].fingerprint, p["chunk"].end])


def publish_samples(session: Session, samples: Samples) -> None:
    publish_image(session, samples.grid, artifact_key("samples", session.name),
                  f"Samples of session {session.name} at step {samples.step}",
                  samples_markdown(session, samples))


@task(name="train-chunk", task_run_name="train steps {chunk.start}-{chunk.end}",
      cache_key_fn=_cache_key, persist_result=True)
def train_chunk(plan: TrainingPlan, chunk: Chunk, progress: UUID | None = None) -> ChunkOutcome:
    """`progress`: the run's progress artifact, updated as steps complete."""
    log, session = get_run_logger(), plan.session.open()
    monitor = TrainingMonitor(session, [c.end for c in plan.chunks], log,
                              on_progress=[progress_updater(progress, session.name)],
                              on_chunk_end=[loss_plot_publisher(session)])
    outcome = train_chunk_steps(plan, chunk, log, monitor=monitor)
    if outcome.samples is not None:
        publish_samples(session, outcome.samples)
    return outcome
