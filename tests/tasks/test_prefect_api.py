"""Calls for the Prefect UI never hold training up: an API that refuses or hangs is marked down
once, with one warning, and skipped until it answers again."""

from __future__ import annotations

import logging
import socket

import pytest
from prefect.artifacts import create_markdown_artifact
from prefect.settings import PREFECT_API_URL, temporary_settings
from web_server import closed_port_url

import tasks.prefect_api as prefect_api
from tasks.prefect_api import PrefectApiLink, is_api_failure, ui_call

# The calls here make artifacts outside a flow run, as no run needs to exist for what is tested.
pytestmark = pytest.mark.filterwarnings("ignore:Artifact creation outside of a flow:FutureWarning")


@pytest.fixture
def link(monkeypatch):
    """A fresh link for the test, put back as it was afterwards."""
    fresh = PrefectApiLink()
    monkeypatch.setattr(prefect_api, "API", fresh)
    yield fresh
    if fresh.down:
        fresh.reconnected()


def test_a_refused_call_marks_the_api_down_with_one_warning(link, caplog):
    with temporary_settings(updates={PREFECT_API_URL: closed_port_url("/api")}), \
            caplog.at_level(logging.WARNING, logger="dreambooth"):
        assert ui_call(create_markdown_artifact, "# hello", key="greeting") is None
        assert link.down
        calls = []
        assert ui_call(lambda: calls.append(1)) is None  # skipped, not tried
    assert not calls
    warnings = [r.getMessage() for r in caplog.records if "stopped answering" in r.getMessage()]
    assert len(warnings) == 1 and "Training goes on" in warnings[0]


@pytest.mark.timeout(45)  # unbounded, the call would wait Prefect's 60 s request timeout
def test_a_hung_server_holds_a_call_no_longer_than_its_bound(link, monkeypatch):
    monkeypatch.setattr(prefect_api, "CALL_SECONDS", 1.0)
    with socket.socket() as hung:  # accepts connections, never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}/api"
        with temporary_settings(updates={PREFECT_API_URL: url}):
            assert ui_call(create_markdown_artifact, "# hello", key="greeting") is None
        assert link.down


def test_errors_that_are_not_the_api_are_raised():
    with pytest.raises(ZeroDivisionError):
        PrefectApiLink().call(lambda: 1 / 0)
    assert not is_api_failure(ZeroDivisionError())
    wrapped = RuntimeError("Failed to reach API")
    wrapped.__cause__ = ConnectionRefusedError()
    assert is_api_failure(wrapped)


@pytest.mark.slow  # the shared Prefect server
def test_calls_resume_once_the_api_answers_again(prefect_api_url, link, monkeypatch, caplog):
    link.lost("a test")
    calls = []
    assert ui_call(lambda: calls.append(1)) is None and not calls  # down: skipped
    monkeypatch.setattr(prefect_api, "PROBE_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="dreambooth"):
        assert ui_call(create_markdown_artifact, "# back", key="greeting") is not None  # an artifact id
    assert not link.down
    assert any("answers again" in r.getMessage() for r in caplog.records)
