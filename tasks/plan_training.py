"""@task: fix the training fingerprint and chunk plan; find where to resume."""

from prefect import get_run_logger, task

from dreambooth_core.captions.captioning import Captions
from dreambooth_core.config import DreamBoothConfig
from dreambooth_core.families import family_of
from dreambooth_core.families.base_model import LocalModel
from dreambooth_core.photos.prepare import PreparedDataset
from dreambooth_core.session.class_images import ClassImages
from dreambooth_core.session.storage import SessionRef
from dreambooth_core.training.memory.plan import eight_bit_problem
from dreambooth_core.training.methods import frozen_text_encoder_note
from dreambooth_core.training.plan import TrainingPlan, make_plan


@task(name="plan-training", task_run_name="plan training")
def plan_training(ref: SessionRef, config: DreamBoothConfig, model: LocalModel, dataset: PreparedDataset,
                  captions: Captions, class_images: ClassImages | None = None) -> TrainingPlan:
    plan = make_plan(ref.open(), ref, config, model, dataset, captions, class_images)
    log = get_run_logger()
    if plan.memory_plan and plan.memory_plan.budget_bytes and (left_out := eight_bit_problem()):
        log.warning("--memory auto: %s", left_out)
    if note := frozen_text_encoder_note(plan.training, family_of(plan.family)):
        log.info(note)
    log.info("%s: %d steps in %d chunk(s) of up to %d", plan.training.method, plan.total_steps,
             len(plan.chunks), plan.runtime.chunk_steps)
    if plan.resume_step >= plan.total_steps:
        log.info("All %d steps are already trained", plan.total_steps)
    elif plan.resume_step:
        log.info("Resuming from step %d (last committed checkpoint)", plan.resume_step)
    return plan
