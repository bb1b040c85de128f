"""@task: copy the originals into the session and prepare square training images."""

from pathlib import Path

from prefect import get_run_logger, task

from tasks.config import digest
from tasks.dataset.prepare import PreparedDataset, build_dataset
from tasks.model.fetch import LocalModel
from tasks.session_state import SessionRef
from tasks.training.model_parts import native_resolution


def _cache_key(context, p) -> str:
    # A session's photos never change once imported, so its uid stands for them.
    return digest(["prepare", p["ref"].uid, p["resolution"], p["model"].digest])


@task(name="prepare-photos", task_run_name="prepare photos", cache_key_fn=_cache_key, persist_result=True)
def prepare_photos(ref: SessionRef, photos: str | None, resolution: int | None,
                   model: LocalModel) -> PreparedDataset:
    size = resolution or native_resolution(model.path)
    return build_dataset(ref.open(), Path(photos) if photos else None, size, get_run_logger())
