"""@task: write the method's outputs: full model, LoRA or embedding files."""

from prefect import get_run_logger, task

from dreambooth_core.config import ExportSettings
from dreambooth_core.export.outputs import ExportResult, export_outputs
from dreambooth_core.training.live import LiveTraining
from dreambooth_core.training.plan import TrainingPlan
from tasks import session_cache_key


@task(name="export-model", task_run_name="export {settings.export_precision}", persist_result=True,
      cache_key_fn=lambda context, p: session_cache_key(p["plan"], p["plan"].total_steps,
                                                        p["settings"].export_precision))
def export_model(plan: TrainingPlan, settings: ExportSettings,
                 live: LiveTraining | None = None) -> ExportResult:
    """`live`: the run's trainer (its weights reused, then released) and background commits (waited for)."""
    return export_outputs(plan, settings, live, get_run_logger())
