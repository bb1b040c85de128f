"""@task: square training images made from the session's photos, at the training resolution."""

from prefect import get_run_logger, task

from dreambooth_core.hashing import digest
from dreambooth_core.photos.originals import PhotoSet
from dreambooth_core.photos.prepare import PreparedDataset, build_dataset, method
from dreambooth_core.session.paths import CONTACT_SHEET
from dreambooth_core.session.storage import SessionRef
from tasks import RESULTS
from tasks.artifacts import artifact_key, publish_image


def _cache_key(context, p) -> str:
    # The photos' content and every setting that changes a prepared image. Correctness does
    # not depend on it: build_dataset reuses what the session already holds.
    return digest(["prepare", RESULTS, p["ref"].uid, p["photos"].digest, p["resolution"], method()])


@task(name="prepare-photos", task_run_name="prepare photos", cache_key_fn=_cache_key, persist_result=True)
def prepare_photos(ref: SessionRef, photos: PhotoSet, resolution: int) -> PreparedDataset:
    """`resolution`: the training resolution (the run decides it once, from the model's family)."""
    session = ref.open()
    dataset = build_dataset(session, photos, resolution, get_run_logger())
    title = f"Prepared photos of session {session.name}"
    publish_image(session, CONTACT_SHEET, artifact_key("contact-sheet", session.name), title,
                  f"# {title}\n\n{dataset.count} photos, cropped square around the face (centre "
                  f"when none is found) and resized to {resolution}x{resolution}.\n")
    return dataset
