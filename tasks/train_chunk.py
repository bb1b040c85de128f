"""@task: train one chunk of steps and commit its checkpoint; show its loss and samples."""

from uuid import UUID

from prefect import get_run_logger, task

from dreambooth_core.config import SampleSettings
from dreambooth_core.evaluation.session_evaluation import evaluation_markdown
from dreambooth_core.families import family_of
from dreambooth_core.evaluation.training_evaluation import (
    EvaluationHook,
    TrainingEvaluation,
    evaluated_report,
)
from dreambooth_core.export.snapshots import SnapshotHook
from dreambooth_core.generation.samples import SampleHook, sample_spec, samples_markdown, saved_samples
from dreambooth_core.session.dataset_manifest import require_dataset_manifest
from dreambooth_core.session.paths import EVALUATION_PNG
from dreambooth_core.training.chunk import ChunkHooks, ChunkOutcome, run_chunk
from dreambooth_core.training.distributed.worker_group import run_chunk_on_processes
from dreambooth_core.training.live import LiveTraining
from dreambooth_core.training.plan import Chunk, TrainingPlan
from tasks import session_cache_key
from tasks.artifacts import artifact_key, loss_plot_publisher, progress_updater, publish_image


@task(name="train-chunk", task_run_name="train steps {chunk.start}-{chunk.end}",
      cache_key_fn=lambda context, p: session_cache_key(p["plan"], p["chunk"].end), persist_result=True)
def train_chunk(plan: TrainingPlan, chunk: Chunk, samples: SampleSettings,
                evaluation: TrainingEvaluation | None, live: LiveTraining,
                progress: UUID | None = None) -> ChunkOutcome:
    """`evaluation`: measure the chunk's end (None: off); `live`: the run's trainer and background
    commits; `progress`: its progress artifact."""
    log, session = get_run_logger(), plan.session.open()
    spec = sample_spec(samples, require_dataset_manifest(session).subjects, plan.resolution,
                       plan.training.seed, family_of(plan.family).default_guidance)
    after_chunk = (SampleHook(plan.session, plan.model_path, spec, samples.sample_every) if spec else None,
                   EvaluationHook(plan.session, plan.model_path, evaluation) if evaluation else None)
    hooks = ChunkHooks(
        after_step=SnapshotHook(plan.session, plan.model_path, plan.family, samples.snapshot_every,
                                samples.keep_snapshots) if samples.snapshot_every else None,
        after_chunk=tuple(hook for hook in after_chunk if hook),
        on_progress=(progress_updater(progress, session.name),),
        on_chunk_end=(loss_plot_publisher(session),))
    run = run_chunk if plan.training.gpus == 1 else run_chunk_on_processes
    outcome = run(plan, chunk, live, hooks, log)
    shown = saved_samples(session, chunk.end, spec) if spec and outcome.trained_steps else None
    if shown is not None:
        publish_image(session, shown.grid, artifact_key("samples", session.name),
                      f"Samples of session {session.name} at step {shown.step}",
                      samples_markdown(session, shown))
    report = evaluated_report(session, chunk.end) if evaluation and outcome.trained_steps else None
    if report is not None:
        publish_image(session, EVALUATION_PNG, artifact_key("evaluation", session.name),
                      f"Evaluation of session {session.name} to step {chunk.end}",
                      evaluation_markdown(session.name, report))
    return outcome
