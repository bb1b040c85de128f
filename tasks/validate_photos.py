"""@task: check every photo before anything slow happens; report; stop on errors."""

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.config import DreamBoothConfig
from tasks.dataset.validate import (dataset_error, report_markdown, settings_from_config, summary_line,
                                    validate_for_session, warning_lines, write_dataset_report)
from tasks.session_state import SessionRef, artifact_key


@task(name="validate-photos", task_run_name="validate photos")
def validate_photos(ref: SessionRef, config: DreamBoothConfig) -> dict[str, int]:
    """Returns {verdict: number of photos}."""
    session = ref.open()
    report = validate_for_session(session, config.photos, settings_from_config(config))
    write_dataset_report(session, report)
    create_markdown_artifact(report_markdown(report), key=artifact_key("dataset", session.name),
                             description=f"Photo check of session {session.name}")
    log = get_run_logger()
    log.info("Photo check: %s (reports/dataset.md)", summary_line(report))
    for line in warning_lines(report):
        log.warning(line)
    error = dataset_error(report)
    if error:
        raise error
    return report.verdicts
