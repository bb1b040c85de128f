"""@task: class images for prior preservation, generated once per (model, prompt, settings) and shared."""

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.config import DreamBoothConfig
from tasks.dataset.prepare import MANIFEST
from tasks.generation.class_images import ClassImages, build_class_images, class_images_markdown, prior_applies
from tasks.model.fetch import LocalModel
from tasks.reports.terminal import progress_bar
from tasks.session_state import SessionRef, artifact_key
from tasks.training.model_parts import resolve_device


@task(name="generate-class-images", task_run_name="class images")
def generate_class_images(ref: SessionRef, model: LocalModel, resolution: int,
                          config: DreamBoothConfig) -> ClassImages | None:
    """No Prefect cache: the store is the cache, and a rerun that finds every image makes none."""
    session, log = ref.open(), get_run_logger()
    subjects = session.read_json(MANIFEST)["subjects"]
    reason = prior_applies(subjects, config)
    if reason:
        log.info("Prior preservation off: %s", reason)
        return None
    bar = progress_bar(None, "class images", unit=" image")  # [ui] a counter, on a terminal only
    manifest = build_class_images(session, ref.storage, model.path, model.digest, resolution,
                                  resolve_device(config.device), config.class_images,
                                  config.class_prompt, config.class_images_folder, log=log,
                                  on_image=lambda index: bar.update())
    bar.close()
    create_markdown_artifact(class_images_markdown(manifest), key=artifact_key("class-images", session.name),
                             description=f"Class images of session {session.name}")
    log.info("Class images ready: %s (%d generated now)",
             ", ".join(f"{s.subject} {len(s.files)}" for s in manifest.sets), manifest.generated)
    return manifest
