"""The publish flow: a trained session's files and model card to a Hugging Face model repo."""

from prefect import flow

from dreambooth_core.publish.hub import PublishResult
from flows.session_storage import use_blocks
from tasks.open_trained_session import open_trained_session
from tasks.publish_session import publish_session


@flow(name="dreambooth-publish", flow_run_name="{session} to {repo}")
def dreambooth_publish(session: str, repo: str, storage: str = "sessions", storage_block: str | None = None,
                       private: bool = False, step: int | None = None,
                       hf_credentials_block: str | None = None) -> PublishResult:
    """Upload session `session`'s final outputs (or exports/step-`step`/, exported with `dreambooth
    export`) to the model repo `repo` (USER/NAME) with a generated model card; a rerun uploads only
    what changed."""
    if storage_block:
        use_blocks()
    trained = open_trained_session(session, storage, storage_block)
    return publish_session(trained.session, repo, private, step,
                           hf_credentials_block or trained.hf_credentials_block)
