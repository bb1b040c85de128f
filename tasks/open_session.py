"""@task: open or create the session and check the configuration against it."""

from prefect import get_run_logger, task

from dreambooth_core.config import DreamBoothConfig
from dreambooth_core.photos.originals import require_photos
from dreambooth_core.session.state import open_or_create
from dreambooth_core.session.storage import SessionRef, open_named_session


@task(name="open-session", task_run_name="open session {config.session}")
def open_session(config: DreamBoothConfig) -> SessionRef:
    inputs = config.inputs
    session = open_named_session(inputs.storage, inputs.storage_block, config.session)
    require_photos(session, inputs.photos)
    ref = open_or_create(session, config)
    get_run_logger().info("Session %s (storage %s)", session.url, inputs.storage_block or inputs.storage)
    return ref
