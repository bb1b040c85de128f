"""@task: class images for prior preservation, generated once per (model, prompt, settings) and shared."""

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.generation.class_images import ClassImages, build_class_images, class_images_markdown
from tasks.model.fetch import LocalModel
from tasks.session_state import SessionRef, artifact_key
from tasks.training.model_parts import resolve_device


@task(name="generate-class-images", task_run_name="class images")
def generate_class_images(ref: SessionRef, model: LocalModel, resolution: int, count: int = 200,
                          class_prompt: str | None = None, own_folder: str | None = None, seed: int = 0,
                          device: str = "auto") -> ClassImages:
    """No Prefect cache: the store is the cache, and a rerun that finds every image makes none."""
    session = ref.open()
    log = get_run_logger()
    manifest = build_class_images(session, ref.storage, model.path, model.digest, resolution,
                                  resolve_device(device), count, class_prompt, own_folder, seed, log=log)
    create_markdown_artifact(class_images_markdown(manifest), key=artifact_key("class-images", session.name),
                             description=f"Class images of session {session.name}")
    log.info("Class images ready: %s (%d generated now)",
             ", ".join(f"{s.subject} {len(s.files)}" for s in manifest.sets), manifest.generated)
    return manifest
