"""@task: check every photo before anything slow happens; report; stop on errors.

The photos are read once: the given folder is checked and, when usable, imported
into the session in the same pass."""

from prefect import get_run_logger, task

from dreambooth_core.config import DreamBoothConfig
from dreambooth_core.families.expected import expected_resolution
from dreambooth_core.photos.originals import PhotoSet
from dreambooth_core.photos.validate import (
    ValidationSettings,
    check_session_photos,
    dataset_error,
    report_markdown,
    summary_line,
    warning_lines,
    write_dataset_report,
)
from dreambooth_core.session.storage import SessionRef
from tasks.artifacts import artifact_key, publish_markdown


@task(name="validate-photos", task_run_name="validate photos")
def validate_photos(ref: SessionRef, config: DreamBoothConfig) -> PhotoSet:
    """Returns the session's photo set (names and hashes), for the later steps."""
    session = ref.open()
    # The model is not fetched yet: sizes are judged against the resolution it is expected to have.
    resolution, source = expected_resolution(config.base_model.model, config.training.resolution)
    settings = ValidationSettings.of(config.captions, config.checks, resolution, source)
    log = get_run_logger()
    report, photos = check_session_photos(session, config.inputs.photos, settings, log)
    write_dataset_report(session, report)
    publish_markdown(report_markdown(report), artifact_key("dataset", session.name),
                     f"Photo check of session {session.name}")
    log.info("Photo check: %s (reports/dataset.md)", summary_line(report))
    for line in warning_lines(report):
        log.warning(line)
    error = dataset_error(report)
    if error:
        raise error
    return photos
