"""@task: train one chunk of steps and commit its checkpoint; show its samples."""

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.config import Chunk, digest
from tasks.generation.samples import Samples, samples_markdown
from tasks.session import Session
from tasks.session_state import artifact_key
from tasks.training.plan import TrainingPlan
from tasks.training.run import ChunkOutcome, train_chunk_steps


def _cache_key(context, p) -> str:
    return digest(["chunk", p["plan"].session.uid, p["plan"].fingerprint, p["chunk"].end])


def publish_samples(session: Session, samples: Samples) -> None:
    create_markdown_artifact(samples_markdown(session, samples), key=artifact_key("samples", session.name),
                             description=f"Samples of session {session.name} at step {samples.step}")


@task(name="train-chunk", task_run_name="train steps {chunk.start}-{chunk.end}",
      cache_key_fn=_cache_key, persist_result=True)
def train_chunk(plan: TrainingPlan, chunk: Chunk) -> ChunkOutcome:
    outcome = train_chunk_steps(plan, chunk, get_run_logger())
    if outcome.samples is not None:
        publish_samples(plan.session.open(), outcome.samples)
    return outcome
