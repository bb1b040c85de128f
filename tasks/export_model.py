"""@task: write the method's outputs: full model, LoRA or embedding files."""

from prefect import get_run_logger, task

from dreambooth_core.config import ExportSettings
from dreambooth_core.export.outputs import ExportResult, export_outputs
from dreambooth_core.hashing import digest
from dreambooth_core.training.live import LiveTraining
from dreambooth_core.training.plan import TrainingPlan
from tasks import RESULTS


def _cache_key(context, p) -> str:
    plan = p["plan"]
    return digest(["export", RESULTS, plan.session.uid, plan.fingerprint, plan.total_steps,
                   p["settings"].export_precision])


@task(name="export-model", task_run_name="export {settings.export_precision}", cache_key_fn=_cache_key,
      persist_result=True)
def export_model(plan: TrainingPlan, settings: ExportSettings, live: LiveTraining | None = None) -> ExportResult:
    """`live`: the run's trainer (released) and background commits (waited for)."""
    return export_outputs(plan, settings, live, get_run_logger())
