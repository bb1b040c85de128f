"""@task: open or create the session and check the configuration against it."""


from prefect import get_run_logger, task

from tasks.config import DreamBoothConfig
from tasks.dataset.photos import check_photos
from tasks.session_state import SessionRef, open_or_create
from tasks.session_storage import open_config_session


@task(name="open-session", task_run_name="open session {config.session}")
def open_session(config: DreamBoothConfig) -> SessionRef:
    session = open_config_session(config)
    check_photos(session, config.photos)
    ref = open_or_create(session, config)
    get_run_logger().info("Session %s (storage %s)", session.url, config.storage_block or config.storage)
    return ref
