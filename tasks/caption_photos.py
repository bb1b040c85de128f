"""@task: the subject token and caption of every prepared photo."""

from prefect import get_run_logger, task

from dreambooth_core.captions.captioning import Captions, caption_dataset
from dreambooth_core.config import CaptionSettings
from dreambooth_core.families import family_of
from dreambooth_core.families.base_model import LocalModel
from dreambooth_core.photos.prepare import PreparedDataset
from dreambooth_core.session.storage import SessionRef


# No Prefect cache: the captions live in the dataset manifest, which a run may have rebuilt
# (a damaged one is), and a cached result would leave it without them. Captioning is cheap.
@task(name="caption-photos", task_run_name="caption photos")
def caption_photos(ref: SessionRef, dataset: PreparedDataset, model: LocalModel,
                   settings: CaptionSettings) -> Captions:
    judges = family_of(model.family).token_judges(model.path)
    return caption_dataset(ref.open(), next(iter(judges.values())), settings, get_run_logger())
