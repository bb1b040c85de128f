"""@task: square training images made from the session's photos, at the training resolution."""

from prefect import get_run_logger, task

from dreambooth_core.photos.originals import PhotoSet
from dreambooth_core.photos.prepare import PreparedDataset, build_dataset
from dreambooth_core.session.paths import CONTACT_SHEET
from dreambooth_core.session.storage import SessionRef
from tasks.artifacts import artifact_key, publish_image


# No Prefect cache: build_dataset reuses what the session holds (a rerun prepares nothing), and
# it checks every prepared image, which a cached result would skip: one deleted or edited by
# hand is made again.
@task(name="prepare-photos", task_run_name="prepare photos")
def prepare_photos(ref: SessionRef, photos: PhotoSet, resolution: int, buckets: int = 0) -> PreparedDataset:
    """`resolution`: the training resolution (the run decides it once, from the model's family);
    `buckets`: aspect-ratio buckets of its pixel area, their sides in steps of this many pixels, instead
    of squares (0; a session that has started training keeps the images it trained on)."""
    session = ref.open()
    dataset = build_dataset(session, photos, resolution, get_run_logger(), buckets=buckets)
    title = f"Prepared photos of session {session.name}"
    if dataset.buckets:
        shape = ("cropped to the aspect-ratio bucket nearest each photo's shape, around the face, in "
                 "buckets " + ", ".join(f"{size} ({count})" for size, count in dataset.buckets.items()))
    else:
        shape = ("cropped square around the face (centre when none is found) and resized to "
                 f"{resolution}x{resolution}")
    publish_image(session, CONTACT_SHEET, artifact_key("contact-sheet", session.name), title,
                  f"# {title}\n\n{dataset.count} photos, {shape}.\n")
    return dataset
