"""@task: class images for prior preservation, generated once per (model, prompt, settings) and shared."""

from prefect import get_run_logger, task

from dreambooth_core.config import TrainingSettings
from dreambooth_core.generation.class_images import build_class_images, class_images_markdown, prior_applies
from dreambooth_core.families.base_model import LocalModel
from dreambooth_core.reports.terminal import progress_bar
from dreambooth_core.session.class_images import ClassImages
from dreambooth_core.session.dataset_manifest import require_dataset_manifest
from dreambooth_core.session.storage import SessionRef
from dreambooth_core.training.devices import resolve_device
from tasks.artifacts import artifact_key, publish_markdown


@task(name="generate-class-images", task_run_name="class images")
def generate_class_images(ref: SessionRef, model: LocalModel, resolution: int, training: TrainingSettings,
                          class_prompt: str, device: str = "auto") -> ClassImages | None:
    """No Prefect cache: the store is the cache, and a rerun that finds every image makes none."""
    session, log = ref.open(), get_run_logger()
    reason = prior_applies(require_dataset_manifest(session).subjects, training, class_prompt)
    if reason:
        log.info("Prior preservation off: %s", reason)
        return None
    bar = progress_bar(None, "class images", unit=" image")  # [ui] a counter, on a terminal only
    manifest = build_class_images(session, ref.storage, model.path, model.digest, resolution,
                                  resolve_device(device), training.class_images, class_prompt,
                                  training.class_images_folder, log=log, on_image=lambda index: bar.update())
    bar.close()
    publish_markdown(class_images_markdown(manifest), artifact_key("class-images", session.name),
                     f"Class images of session {session.name}")
    log.info("Class images ready: %s (%d generated now)",
             ", ".join(f"{s.subject} {len(s.files)}" for s in manifest.sets), manifest.generated)
    return manifest
