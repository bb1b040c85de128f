"""@task: fix the training fingerprint and chunk plan; find where to resume."""

from prefect import get_run_logger, task

from tasks.captions.manifest import Captions
from tasks.config import DreamBoothConfig
from tasks.dataset.prepare import MANIFEST, PreparedDataset
from tasks.generation.class_images import ClassImages
from tasks.generation.samples import SampleSettings, sample_prompts
from tasks.model.fetch import LocalModel
from tasks.session_state import SessionRef
from tasks.training import live
from tasks.training.plan import Extras, TrainingPlan, make_plan


def extras_for(config: DreamBoothConfig, subjects: dict, resolution: int) -> Extras:
    own = [p.strip() for p in (config.sample_prompts or "").split(";") if p.strip()]
    samples = SampleSettings(prompts=sample_prompts(subjects, own), resolution=resolution,
                             seed=config.seed, steps=config.sample_steps)
    return Extras(samples=samples if config.sample_every else None, sample_every=config.sample_every,
                  snapshot_every=config.snapshot_every, keep_snapshots=config.keep_snapshots)


@task(name="plan-training", task_run_name="plan training")
def plan_training(ref: SessionRef, config: DreamBoothConfig, model: LocalModel,
                  dataset: PreparedDataset, captions: Captions,
                  class_images: ClassImages | None = None) -> TrainingPlan:
    live.release()  # a new run starts from committed checkpoints only
    session = ref.open()
    extras = extras_for(config, session.read_json(MANIFEST)["subjects"], dataset.resolution)
    plan = make_plan(session, ref, config, model.path, model.digest, captions.digest, dataset.count,
                     class_images, extras)
    log = get_run_logger()
    log.info("%s: %d steps in %d chunk(s) of up to %d", config.method, plan.total_steps,
             len(plan.chunks), config.chunk_steps)
    if plan.resume_step >= plan.total_steps:
        log.info("All %d steps are already trained", plan.total_steps)
    elif plan.resume_step:
        log.info("Resuming from step %d (last committed checkpoint)", plan.resume_step)
    return plan
