"""@task: copy the originals into the session and prepare square training images."""

from prefect import get_run_logger, task

from tasks.config import digest
from tasks.dataset.contact_sheet import CONTACT_SHEET
from tasks.dataset.photos import hash_inputs, photos_digest, recorded_photos, uses_given_photos
from tasks.dataset.prepare import PreparedDataset, build_dataset, method
from tasks.model.fetch import LocalModel
from tasks.session_state import SessionRef, artifact_key
from tasks.training.model_parts import native_resolution
from tasks.ui_artifacts import publish_image


def _cache_key(context, p) -> str:
    # The photos' content (those given, else the session's own) and every setting that
    # changes a prepared image. Correctness does not depend on it: build_dataset reuses
    # what the session already holds.
    photos, session = p["photos"], p["ref"].open()
    hashes = hash_inputs(photos) if uses_given_photos(session, photos) else recorded_photos(session)
    return digest(["prepare", p["ref"].uid, photos_digest(hashes), p["resolution"],
                   p["model"].digest, method()])


@task(name="prepare-photos", task_run_name="prepare photos", cache_key_fn=_cache_key, persist_result=True)
def prepare_photos(ref: SessionRef, photos: str | None, resolution: int | None,
                   model: LocalModel) -> PreparedDataset:
    size = resolution or native_resolution(model.path)
    session = ref.open()
    dataset = build_dataset(session, photos, size, get_run_logger())
    title = f"Prepared photos of session {session.name}"
    publish_image(session, CONTACT_SHEET, artifact_key("contact-sheet", session.name), title,
                  f"# {title}\n\n{dataset.count} photos, cropped square around the face (centre "
                  f"when none is found) and resized to {size}x{size}.\n")
    return dataset
