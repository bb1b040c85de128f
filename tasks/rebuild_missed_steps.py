"""@task: the sample grids and evaluation rows a stopped run did not make, rendered from their
steps' checkpoints before training resumes."""

from prefect import get_run_logger, task

from dreambooth_core.config import SampleSettings
from dreambooth_core.evaluation import missed_steps
from dreambooth_core.evaluation.training_evaluation import TrainingEvaluation
from dreambooth_core.families import family_of
from dreambooth_core.generation.samples import sample_spec
from dreambooth_core.session.dataset_manifest import require_dataset_manifest
from dreambooth_core.training.plan import TrainingPlan


@task(name="rebuild-missed-steps", task_run_name="missed samples and evaluations")
def rebuild_missed_steps(plan: TrainingPlan, samples: SampleSettings,
                         evaluation: TrainingEvaluation | None) -> list[int]:
    """The steps rendered (usually none: a check of a few files)."""
    session = plan.session.open()
    subjects = require_dataset_manifest(session).subjects
    spec = sample_spec(samples, subjects, plan.resolution, plan.training.seed,
                       family_of(plan.family).default_guidance)
    return missed_steps.rebuild_missed_steps(session, plan, spec, samples.sample_every, evaluation,
                                             get_run_logger())
