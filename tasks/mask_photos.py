"""@task: the subject mask of every prepared photo, when --masked-loss is on."""

import os

from prefect import get_run_logger, task

from dreambooth_core.captions.captioning import Captions
from dreambooth_core.model.cache import model_cache_dir
from dreambooth_core.model.segmentation import Segmenter, fetch_segmenter, segmenter_for, segmenter_name
from dreambooth_core.session.paths import CONTACT_SHEET
from dreambooth_core.session.storage import SessionRef
from dreambooth_core.training.data.masks import MaskManifest, build_masks
from tasks.artifacts import artifact_key, publish_image


# No Prefect cache: the session is the cache (each mask is named after what made it).
@task(name="mask-photos", task_run_name="subject masks")
def mask_photos(ref: SessionRef, base_model: str, captions: Captions) -> MaskManifest:
    """`captions` orders this task after the class words are recorded (they prompt the segmenter)."""
    session, log = ref.open(), get_run_logger()

    spec = segmenter_for(base_model)

    def segmenter() -> Segmenter:
        return Segmenter(fetch_segmenter(spec, model_cache_dir(), os.environ.get("HF_TOKEN"), log))

    manifest = build_masks(session, segmenter_name(spec), segmenter, log)
    title = f"Subject masks of session {session.name}"
    missing = manifest.without_subject
    publish_image(session, CONTACT_SHEET, artifact_key("contact-sheet", session.name), title,
                  f"# {title}\n\nThe contact sheet: each prepared photo with its background darkened as "
                  "--masked-loss weighs it"
                  f"{f'; no subject found in {len(missing)}' if missing else ''}.\n")
    return manifest
