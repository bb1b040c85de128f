"""The run's link to the Prefect API, which training never waits on.

The session is the truth; the Prefect UI only shows it. When the API stops answering in the
middle of a run (its server killed by the out-of-memory killer, restarting, hung), training
goes on and commits to the session, and what was meant for the UI is dropped, with one warning:

- Every call the run makes for the UI (artifacts: progress, images, the summary) goes through
  `ui_call`: in a thread of its own, waited for at most CALL_SECONDS, without Prefect's client
  retries (they would hold training up to a minute per call, for an update that costs nothing
  to lose). The first call that fails marks the API down.
- While it is down, UI calls are skipped; the run's log lines are not queued for the API,
  Prefect's events worker gets no new events (task-run states, the trained event), and its
  complaints about the lost connection are not printed again. A UI call every PROBE_SECONDS
  checks whether the API answers again; if it does, one line says so and sending resumes (what
  was dropped meanwhile stays missing: the progress bar catches up at its next update).
- Prefect's own "Unable to connect" from its events worker marks the API down too: it often
  notices first.

The flow run's end is reported by Prefect's engine after the flow body returns; when that
fails, the CLI reports the body's own outcome (`ended`) and says that the UI lost the run's end.

Why this design rather than running chunks outside Prefect when the API is down: the engine
already runs tasks without the API (Prefect 3 reports task-run states as events, from a
background thread); only the run's own UI calls and the flow run's end block on it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

CALL_SECONDS = 15.0  # a UI call to a healthy server takes milliseconds; a hung one, forever
PROBE_SECONDS = 30.0  # while the API is down, how often a UI call checks whether it is back


def is_api_failure(exc: BaseException | None) -> bool:
    """Whether `exc` says the Prefect API could not be reached or did not answer (not a bug)."""
    while exc is not None:
        if isinstance(exc, (httpx.HTTPError, TimeoutError, ConnectionError)):
            return True
        exc = exc.__cause__  # Prefect wraps some ("Failed to reach API") in a RuntimeError
    return False


class RunOutcome:
    """What the flow body ended with: its result or its error (None while it runs)."""

    def __init__(self) -> None:
        self.ended = False
        self.result: Any = None
        self.error: BaseException | None = None

    def returns(self, result: T) -> T:
        self.ended, self.result = True, result
        return result

    def get(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class PrefectApiLink:
    """The Prefect API as this process last found it. One per process (`API`); each run
    starts it afresh (`run()`)."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.last_probe = 0.0
        self.outcome = RunOutcome()
        self._quiet = _QuietWhileDown(self)
        self._raise_exceptions = logging.raiseExceptions
        self.log: logging.Logger | logging.LoggerAdapter = logging.getLogger("dreambooth")

    @property
    def down(self) -> bool:
        return self.down_since is not None

    @contextmanager
    def run(self) -> Iterator[RunOutcome]:
        """For the body of a flow run: a fresh link, and the body's outcome kept for the CLI."""
        from prefect import get_run_logger

        self.outcome = RunOutcome()
        self.log = get_run_logger()  # the flow run's: usable from Prefect's threads too
        if self.down:
            self.reconnected()
        self._quiet.install()
        try:
            yield self.outcome
        except BaseException as exc:
            self.outcome.ended, self.outcome.error = True, exc
            raise

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """`fn(*args, **kwargs)` (a Prefect client call for the UI), or None when the API is down
        or stops answering during the call."""
        if self.down and not self._answers_again():
            return None
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

        def without_retries() -> T:
            with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}):
                return fn(*args, **kwargs)
        try:
            return _bounded(without_retries, CALL_SECONDS)
        except Exception as exc:
            if not is_api_failure(exc):
                raise
            self.lost(exc)
            return None

    def lost(self, reason: BaseException | str) -> None:
        """Mark the API down (the first time: one warning)."""
        if self.down:
            return
        self.down_since = self.last_probe = time.monotonic()
        from prefect.events.clients import NullEventsClient
        from prefect.events.worker import EventsWorker

        EventsWorker.set_client_override(NullEventsClient)  # new events are dropped, not queued
        # Prefect's log and events workers report each item they fail to send, printed through
        # logging's handler-error path: quiet while the API is known to be down.
        self._raise_exceptions, logging.raiseExceptions = logging.raiseExceptions, False
        self.log.warning("The Prefect API at %s stopped answering (%s). Training goes on and commits to "
                         "the session; progress, images, logs and events for the Prefect UI are dropped "
                         "until it answers again.", _api_url(), _describe(reason))

    def _answers_again(self) -> bool:
        if time.monotonic() - self.last_probe < PROBE_SECONDS:
            return False
        self.last_probe = time.monotonic()
        if not api_answers(_api_url()):
            return False
        self.reconnected()
        self.log.info("The Prefect API answers again: the UI gets this run's progress again.")
        return True

    def reconnected(self) -> None:
        """The API answers again: send to it again."""
        from prefect.events.worker import EventsWorker

        self.down_since = None
        EventsWorker.set_client_override(None)
        logging.raiseExceptions = self._raise_exceptions


def api_answers(api_url: str | None, seconds: float = 2.0) -> bool:
    """Whether anything answers HTTP at the API (any answer below 500: a Prefect Cloud
    workspace URL answers /health with an error status, but it answers)."""
    if not api_url:
        return False
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=seconds).status_code < 500
    except httpx.HTTPError:
        return False


class _QuietWhileDown(logging.Filter):
    """While the API is down: log records are not queued for it (a filter on Prefect's API log
    handler), and Prefect's complaints about the lost connection are not printed (filters on its
    events client and services loggers). Its events worker's "Unable to connect" marks it down."""

    _COMPLAINING = ("prefect.events.clients", "prefect._internal.concurrency")
    _RUN_LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs")  # where its API log handler is

    def __init__(self, link: PrefectApiLink) -> None:
        super().__init__()
        self.link = link

    def install(self) -> None:
        from prefect.logging.handlers import APILogHandler

        handlers = [handler for name in self._RUN_LOGGERS for handler in logging.getLogger(name).handlers
                    if isinstance(handler, APILogHandler)]
        for where in (*handlers, *map(logging.getLogger, self._COMPLAINING)):
            if self not in where.filters:
                where.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.name == "prefect.events.clients" and "Unable to connect" in record.getMessage()
                and not self.link.down and not api_answers(_api_url())):  # not only its websocket
            self.link.lost("its events connection failed")
        return not self.link.down


def _bounded(fn: Callable[[], T], seconds: float) -> T:
    """fn() in a thread of its own, with this thread's context (the run's Prefect contexts),
    waited for at most `seconds`: a hung server cannot hold the caller longer."""
    context = contextvars.copy_context()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = context.run(fn)
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc
    thread = threading.Thread(target=run, name="prefect-ui-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _describe(reason: BaseException | str) -> str:
    if isinstance(reason, str):
        return reason
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__


def _api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


API = PrefectApiLink()


def ui_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """`fn(*args, **kwargs)` for the Prefect UI, which training never waits on (see above)."""
    return API.call(fn, *args, **kwargs)
