"""@task: judge each subject's token with the model's tokenizer; report it; stop on a bad one."""

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.captions.manifest import Captions
from tasks.captions.token_report import (bad_token_error, build_token_report, report_markdown,
                                         write_token_report)
from tasks.captions.tokenizer import load_tokenizer
from tasks.model.fetch import LocalModel
from tasks.session_state import SessionRef, artifact_key, update_state


@task(name="check-tokens", task_run_name="check tokens")
def check_tokens(ref: SessionRef, model: LocalModel, captions: Captions, bad_token: str) -> dict[str, str]:
    """Returns {token: verdict}. `captions` orders this task after the captions are written."""
    session = ref.open()
    report = build_token_report(session, load_tokenizer(model.path))
    write_token_report(session, report)
    create_markdown_artifact(report_markdown(report), key=artifact_key("tokens", session.name),
                             description=f"Subject tokens of session {session.name}")
    log = get_run_logger()
    for subject in report.subjects:
        log.info("Token %r: %s (%s)", subject.token, subject.analysis.verdict, subject.analysis.reason)
    verdicts = {s.token: s.analysis.verdict for s in report.subjects}
    update_state(session, subjects=verdicts)
    error = bad_token_error(report)
    if error and bad_token == "stop":
        raise error
    if error:
        log.warning("Training anyway (--bad-token warn): %s", error)
    return verdicts
