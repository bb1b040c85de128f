"""@task: upload a session's outputs (or a step's export) and its model card to a hub repo."""

from prefect import get_run_logger, task

from dreambooth_core.publish.hub import PublishResult, publish_session as publish
from dreambooth_core.session.storage import SessionRef
from tasks.fetch_base_model import hugging_face_token


# No retries here: a refused token or repo stays refused, and huggingface_hub retries the
# transient HTTP errors of each call itself; a rerun of the flow uploads only what is missing.
@task(name="publish-session", task_run_name="publish {ref.name} to {repo}")
def publish_session(ref: SessionRef, repo: str, private: bool = False, step: int | None = None,
                    hf_credentials_block: str | None = None) -> PublishResult:
    log = get_run_logger()
    result = publish(ref.open(), repo, publish_token(hf_credentials_block), private, step, log=log)
    log.info("Published step %d of %s to %s (%d file(s) uploaded)", result.step, ref.name, result.url,
             len(result.uploaded))
    return result


def publish_token(block_name: str | None) -> str | None:
    """The named block's token, else HF_TOKEN, else the token `hf auth login` saved (huggingface_hub's
    own place for it: a user who logged in with the hub's CLI expects it to be used)."""
    from huggingface_hub import get_token

    from blocks.redaction import remember_secret

    token = hugging_face_token(block_name) or get_token()
    remember_secret(token)
    return token
