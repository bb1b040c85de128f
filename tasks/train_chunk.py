"""@task: train one chunk of steps and commit its checkpoint."""

from uuid import UUID

from prefect import get_run_logger, task

from tasks.config import Chunk, digest
from tasks.reports.monitor import TrainingMonitor
from tasks.training.plan import TrainingPlan
from tasks.training.run import ChunkOutcome, train_chunk_steps
from tasks.ui_artifacts import loss_plot_publisher, progress_updater


def _cache_key(context, p) -> str:
    return digest(["chunk", p["plan"].session.uid, p["plan"].fingerprint, p["chunk"].end])


@task(name="train-chunk", task_run_name="train steps {chunk.start}-{chunk.end}",
      cache_key_fn=_cache_key, persist_result=True)
def train_chunk(plan: TrainingPlan, chunk: Chunk, progress: UUID | None = None) -> ChunkOutcome:
    """`progress`: the run's progress artifact, updated as steps complete."""
    log, session = get_run_logger(), plan.session.open()
    monitor = TrainingMonitor(session, [c.end for c in plan.chunks], log,
                              on_progress=[progress_updater(progress, session.name)],
                              on_chunk_end=[loss_plot_publisher(session)])
    return train_chunk_steps(plan, chunk, log, monitor)
