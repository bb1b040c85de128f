"""@task: the subject token and caption of every prepared photo, and the caption report."""

import os

from prefect import get_run_logger, task

from dreambooth_core.captions.caption_report import write_caption_report
from dreambooth_core.captions.captioning import AutoCaptioner, Captions, caption_dataset, caption_mode
from dreambooth_core.config import CaptionSettings
from dreambooth_core.families import family_of
from dreambooth_core.families.base_model import LocalModel
from dreambooth_core.model.cache import model_cache_dir
from dreambooth_core.model.captioner import captioner_name, fetch_captioner, load_captioner
from dreambooth_core.photos.prepare import PreparedDataset
from dreambooth_core.session.dataset_manifest import require_dataset_manifest
from dreambooth_core.session.state import load_state
from dreambooth_core.session.storage import SessionRef
from tasks.artifacts import artifact_key, publish_markdown


# No Prefect cache: the captions live in the dataset manifest, which a run may have rebuilt
# (a damaged one is), and a cached result would leave it without them. Described captions are
# cached in the session (captions/captioning.py), so a rerun asks the captioner nothing.
@task(name="caption-photos", task_run_name="caption photos")
def caption_photos(ref: SessionRef, dataset: PreparedDataset, model: LocalModel,
                   settings: CaptionSettings, base_model: str) -> Captions:
    """`base_model`: what --model names (a tiny one is captioned by the tiny captioner)."""
    session, log = ref.open(), get_run_logger()
    family = family_of(model.family)
    state = load_state(session)
    mode = caption_mode(settings.caption_mode, family.default_captions, require_dataset_manifest(session),
                        bool(state and state.training_started))
    spec = settings.captioner_for(base_model)
    captioner = AutoCaptioner(captioner_name(spec), lambda: load_captioner(
        fetch_captioner(spec, model_cache_dir(), os.environ.get("HF_TOKEN"), log)))
    judges = family.token_judges(model.path)
    captions = caption_dataset(session, next(iter(judges.values())), settings, log, mode, captioner)
    markdown = write_caption_report(session, require_dataset_manifest(session), mode, captioner.name)
    publish_markdown(markdown, artifact_key("captions", session.name), f"Captions of session {session.name}")
    return captions
