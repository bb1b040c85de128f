"""@task: the identifier token and caption of every prepared photo."""

from prefect import get_run_logger, task

from tasks.captions.manifest import Captions, caption_dataset
from tasks.config import digest
from tasks.dataset.prepare import PreparedDataset
from tasks.session_state import SessionRef


def _cache_key(context, p) -> str:
    return digest(["captions", p["ref"].uid, p["dataset"].digest, p["token"], p["template"]])


@task(name="caption-photos", task_run_name="caption photos", cache_key_fn=_cache_key, persist_result=True)
def caption_photos(ref: SessionRef, dataset: PreparedDataset, token: str | None,
                   template: str) -> Captions:
    return caption_dataset(ref.open(), token, template, get_run_logger())
