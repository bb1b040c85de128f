"""@task: the subject token and caption of every prepared photo."""

from prefect import get_run_logger, task

from dreambooth_core.captions.captioning import Captions, caption_dataset
from dreambooth_core.captions.tokenizer import load_tokenizer
from dreambooth_core.config import CaptionSettings
from dreambooth_core.hashing import digest
from dreambooth_core.model.fetch import LocalModel
from dreambooth_core.photos.prepare import PreparedDataset
from dreambooth_core.session.storage import SessionRef
from tasks import RESULTS


def _cache_key(context, p) -> str:
    return digest(["captions", RESULTS, p["ref"].uid, p["dataset"].digest, p["model"].digest,
                   p["settings"].model_dump()])


@task(name="caption-photos", task_run_name="caption photos", cache_key_fn=_cache_key, persist_result=True)
def caption_photos(ref: SessionRef, dataset: PreparedDataset, model: LocalModel,
                   settings: CaptionSettings) -> Captions:
    return caption_dataset(ref.open(), load_tokenizer(model.path), settings, get_run_logger())
