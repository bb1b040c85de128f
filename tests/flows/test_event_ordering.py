"""flows/event_ordering.py: after a server restart, a state event whose leader came before it is
handled at once, where Prefect's own ordering holds it back for 15 minutes (PrefectHQ/prefect#21932);
later on, the order is Prefect's."""

import asyncio
from datetime import timedelta
from uuid import uuid4

import pytest
from prefect.server.events.ordering import EventArrivedEarly
from prefect.server.events.ordering import memory
from prefect.server.events.schemas.events import ReceivedEvent
from prefect.types._datetime import now

from flows import event_ordering


def completed_after_unseen_running(occurred) -> ReceivedEvent:
    """A run's Completed whose Running this server has not seen (it came before a restart)."""
    return ReceivedEvent(occurred=occurred, received=now("UTC"), event="prefect.flow-run.Completed",
                         resource={"prefect.resource.id": f"prefect.flow-run.{uuid4()}"},
                         follows=uuid4(), id=uuid4())


def handled_at_once(ordering, event: ReceivedEvent) -> bool:
    try:
        asyncio.run(ordering.wait_for_leader(event))
    except EventArrivedEarly:
        return False
    return True


@pytest.fixture
def scope(request) -> str:
    return f"test-{request.node.name}-{uuid4()}"


def test_prefect_holds_back_a_completed_whose_running_came_before_the_restart(scope):
    assert not handled_at_once(memory.CausalOrdering(scope), completed_after_unseen_running(now("UTC")))


def test_ours_handles_it_at_once_and_forgets_it_as_a_follower(scope, monkeypatch):
    monkeypatch.setattr(event_ordering, "STARTED", now("UTC"))  # a server that has just (re)started
    ordering = event_ordering.CausalOrdering(scope)
    event = completed_after_unseen_running(now("UTC"))
    assert handled_at_once(ordering, event)
    assert event.id not in ordering._waitlist  # not handled a second time 15 minutes later


def test_ours_keeps_prefect_order_once_no_leader_can_predate_the_start(scope, monkeypatch):
    monkeypatch.setattr(event_ordering, "STARTED", now("UTC") - timedelta(minutes=6))
    event = completed_after_unseen_running(now("UTC"))
    assert not handled_at_once(event_ordering.CausalOrdering(scope), event)


def test_the_server_setting_loads_it():
    from prefect.server.events.ordering import get_triggers_causal_ordering
    from prefect.settings import PREFECT_SERVER_EVENTS_CAUSAL_ORDERING, temporary_settings

    with temporary_settings({PREFECT_SERVER_EVENTS_CAUSAL_ORDERING: "flows.event_ordering"}):
        assert isinstance(get_triggers_causal_ordering(), event_ordering.CausalOrdering)
