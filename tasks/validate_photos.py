"""@task: check every photo before anything slow happens; report; stop on errors."""

import re

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.config import DreamBoothConfig
from tasks.dataset.photos import PHOTOS, reachable, recorded_photos, training_started
from tasks.dataset.validate import (dataset_error, report_markdown, session_files,
                                    settings_from_config, summary_line, validate_files,
                                    validate_folder, write_dataset_report)
from tasks.session_state import SessionRef


def artifact_key(session: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes."""
    return "dataset-" + re.sub(r"[^a-z0-9-]+", "-", session.lower())


@task(name="validate-photos", task_run_name="validate photos")
def validate_photos(ref: SessionRef, config: DreamBoothConfig) -> dict[str, int]:
    """Returns {verdict: number of photos}. The photos given with --photos are checked before
    they are imported, so a fixed folder can simply be passed again; without them (or once
    training has fixed the set) the session's own copies are checked."""
    session = ref.open()
    settings = settings_from_config(config)
    imported = recorded_photos(session)
    # The same choice import_photos makes: until training starts, --photos replaces the set.
    given = config.photos and (not imported or (not training_started(session) and reachable(config.photos)))
    if given:
        report = validate_folder(config.photos, settings)
    else:
        report = validate_files(session_files(session, sorted(imported), PHOTOS), settings,
                                f"session {session.name!r}")
    write_dataset_report(session, report)
    create_markdown_artifact(report_markdown(report), key=artifact_key(session.name),
                             description=f"Photo check of session {session.name}")
    log = get_run_logger()
    log.info("Photo check: %s (reports/dataset.md)", summary_line(report))
    for photo in report.photos:
        for problem in photo.problems:
            if problem.severity == "warning":
                log.warning("%s: %s. Fix: %s.", photo.name, problem.message, problem.fix)
    for subject in report.subjects:
        for problem in subject.problems:
            if problem.severity == "warning":
                log.warning("subject %r: %s. Fix: %s.", subject.token, problem.message, problem.fix)
    error = dataset_error(report)
    if error:
        raise error
    return report.verdicts
