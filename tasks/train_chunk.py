"""@task: train one chunk of steps and commit its checkpoint."""

from prefect import get_run_logger, task

from tasks.config import Chunk, digest
from tasks.training.plan import TrainingPlan
from tasks.training.run import ChunkOutcome, train_chunk_steps


def _cache_key(context, p) -> str:
    return digest(["chunk", p["plan"].session.uid, p["plan"].fingerprint, p["chunk"].end])


@task(name="train-chunk", task_run_name="train steps {chunk.start}-{chunk.end}",
      cache_key_fn=_cache_key, persist_result=True)
def train_chunk(plan: TrainingPlan, chunk: Chunk) -> ChunkOutcome:
    return train_chunk_steps(plan, chunk, get_run_logger())
