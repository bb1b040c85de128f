"""@task: get the judging models and measure the base model, when evaluation while training is on.
Fetching is retried on network errors only."""

import os

from prefect import get_run_logger, task
from prefect.tasks import exponential_backoff

from dreambooth_core.config import DreamBoothConfig
from dreambooth_core.evaluation.face_identity import fetch_face_model
from dreambooth_core.evaluation.judges import fetch_judges
from dreambooth_core.evaluation.session_evaluation import has_person
from dreambooth_core.evaluation.training_evaluation import (
    TrainingEvaluation,
    evaluate_base_model,
    training_evaluation,
)
from dreambooth_core.families import family_of
from dreambooth_core.generation.pipeline import cpu_render_warning
from dreambooth_core.model.cache import model_cache_dir
from dreambooth_core.training.devices import resolve_device
from dreambooth_core.training.plan import TrainingPlan
from tasks.fetch_base_model import RETRIES, retry_on_network_error


@task(name="prepare-evaluation", task_run_name="evaluate the base model", retries=RETRIES,
      retry_delay_seconds=exponential_backoff(backoff_factor=5), retry_condition_fn=retry_on_network_error)
def prepare_evaluation(plan: TrainingPlan, config: DreamBoothConfig) -> TrainingEvaluation | None:
    """None when evaluation while training is off (--evaluate-every 0)."""
    settings = config.evaluation
    if not settings.evaluate_every:
        return None
    log = get_run_logger()
    judges = settings.judges_for(config.base_model.model)
    folders = fetch_judges(judges, model_cache_dir(), os.environ.get("HF_TOKEN"), log)
    face_model = (fetch_face_model(judges, model_cache_dir(), os.environ.get("HF_TOKEN"), log)
                  if has_person(plan.session.open(), config.checks.subject_type) else None)
    evaluation = training_evaluation(settings, judges, folders, plan.resolution, config.checks.subject_type,
                                     family_of(plan.family).default_guidance, face_model)
    device = resolve_device(plan.runtime.device)
    images = settings.evaluation_prompts * settings.evaluation_images * len(plan.subjects)
    warning = cpu_render_warning(config.base_model.model, images, settings.evaluation_inference_steps,
                                 plan.resolution) if device.type == "cpu" else None
    if warning:
        log.warning("Each evaluation: %s", warning)
    evaluate_base_model(plan.session.open(), plan.model_path, evaluation, device, log)
    return evaluation
