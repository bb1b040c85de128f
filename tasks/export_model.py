"""@task: write the .safetensors, .ckpt and diffusers outputs."""

from prefect import get_run_logger, task

from tasks.config import digest
from tasks.export.outputs import ExportResult, export_outputs
from tasks.training.plan import TrainingPlan


def _cache_key(context, p) -> str:
    plan = p["plan"]
    return digest(["export", plan.session.uid, plan.fingerprint, plan.total_steps, plan.export_precision])


@task(name="export-model", task_run_name="export {plan.export_precision}", cache_key_fn=_cache_key,
      persist_result=True)
def export_model(plan: TrainingPlan) -> ExportResult:
    return export_outputs(plan, get_run_logger())
