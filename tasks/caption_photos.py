"""@task: the subject token and caption of every prepared photo."""

from prefect import get_run_logger, task

from tasks.captions.manifest import Captions, CaptionSettings, caption_dataset
from tasks.captions.tokenizer import load_tokenizer
from tasks.config import digest
from tasks.dataset.prepare import PreparedDataset
from tasks.model.fetch import LocalModel
from tasks.session_state import SessionRef


def _cache_key(context, p) -> str:
    return digest(["captions", p["ref"].uid, p["dataset"].digest, p["model"].digest,
                   p["settings"].model_dump()])


@task(name="caption-photos", task_run_name="caption photos", cache_key_fn=_cache_key, persist_result=True)
def caption_photos(ref: SessionRef, dataset: PreparedDataset, model: LocalModel,
                   settings: CaptionSettings) -> Captions:
    return caption_dataset(ref.open(), load_tokenizer(model.path), settings, get_run_logger())
