"""@task: fix the training fingerprint and chunk plan; find where to resume."""

from prefect import get_run_logger, task

from tasks.captions.manifest import Captions
from tasks.config import DreamBoothConfig
from tasks.dataset.prepare import PreparedDataset
from tasks.model.fetch import LocalModel
from tasks.session_state import SessionRef
from tasks.training.plan import TrainingPlan, make_plan


@task(name="plan-training", task_run_name="plan training")
def plan_training(ref: SessionRef, config: DreamBoothConfig, model: LocalModel,
                  dataset: PreparedDataset, captions: Captions) -> TrainingPlan:
    plan = make_plan(ref.open(), ref, config, model.path, model.digest, captions.digest, dataset.count)
    log = get_run_logger()
    log.info("%d steps in %d chunk(s) of up to %d", plan.total_steps, len(plan.chunks), config.chunk_steps)
    if plan.resume_step >= plan.total_steps:
        log.info("All %d steps are already trained", plan.total_steps)
    elif plan.resume_step:
        log.info("Resuming from step %d (last committed checkpoint)", plan.resume_step)
    return plan
