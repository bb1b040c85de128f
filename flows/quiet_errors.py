"""Keep tracebacks of user mistakes out of Prefect's log output.

Prefect logs every failed task and flow run with its traceback. For a
user's error (USER_ERRORS) the message already says what is wrong and how to fix it, so
the traceback is dropped; so it is for a Prefect API that stopped answering (training goes on
without it, and the run says so: tasks/prefect_api.py). Bugs keep theirs.
"""

import logging

from dreambooth_core.errors import USER_ERRORS
from tasks.prefect_api import is_api_failure


class HideUserErrorTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and (isinstance(error, USER_ERRORS) or is_api_failure(error)):
            record.exc_info = None
            record.exc_text = None
        return True


_QUIET = HideUserErrorTracebacks()


def hide_user_error_tracebacks() -> None:
    """Call after prefect is imported (its import sets up its log handlers)."""
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if _QUIET not in handler.filters:
                handler.addFilter(_QUIET)
