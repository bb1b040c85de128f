"""@task: judge each subject's token with the model's tokenizer; report it; stop on a bad one."""

from prefect import get_run_logger, task

from dreambooth_core.captions.captioning import Captions
from dreambooth_core.captions.token_report import (
    bad_token_error,
    build_token_report,
    per_tokenizer_summary,
    report_markdown,
    stored_token_report,
    write_token_report,
)
from dreambooth_core.families import family_of
from dreambooth_core.families.base_model import LocalModel
from dreambooth_core.session.state import update_state
from dreambooth_core.session.storage import SessionRef
from tasks.artifacts import artifact_key, publish_markdown


@task(name="check-tokens", task_run_name="check tokens")
def check_tokens(ref: SessionRef, model: LocalModel, captions: Captions, bad_token: str) -> dict[str, str]:
    """Returns {token: verdict}. `captions` orders this task after the captions are written."""
    session = ref.open()
    report = (stored_token_report(session, model.digest)
              or build_token_report(session, family_of(model.family).token_judges(model.path), model.digest))
    write_token_report(session, report)
    publish_markdown(report_markdown(report), artifact_key("tokens", session.name),
                     f"Subject tokens of session {session.name}")
    log = get_run_logger()
    for subject in report.subjects:
        log.info("Token %r: %s (%s)", subject.token, subject.analysis.verdict, per_tokenizer_summary(subject))
    verdicts = {s.token: s.analysis.verdict for s in report.subjects}
    update_state(session, token_verdicts=verdicts)
    error = bad_token_error(report)
    if error and bad_token == "stop":
        raise error
    if error:
        log.warning("Training anyway (--bad-token warn): %s", error)
    return verdicts
