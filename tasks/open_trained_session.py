"""@task: find a trained session and the base model it was trained on."""

from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict

from dreambooth_core.config import BaseModelSettings
from dreambooth_core.session.state import existing_state
from dreambooth_core.session.storage import SessionRef, open_named_session


class TrainedSessionRef(BaseModel):
    model_config = ConfigDict(frozen=True)
    session: SessionRef
    base_model: BaseModelSettings
    hf_credentials_block: str | None = None


@task(name="open-trained-session", task_run_name="open session {name}")
def open_trained_session(name: str, storage: str, storage_block: str | None = None) -> TrainedSessionRef:
    session = open_named_session(storage, storage_block, name)
    state = existing_state(session, storage_block)
    get_run_logger().info("Session %s (storage %s)", session.url, storage_block or storage)
    ref = SessionRef(storage=session.storage, name=name, uid=state.uid, storage_block=storage_block)
    return TrainedSessionRef(session=ref, base_model=state.config.base_model,
                             hf_credentials_block=state.config.inputs.hf_credentials_block)
