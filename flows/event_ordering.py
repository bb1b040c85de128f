"""The Prefect server's causal ordering of events, kept right across a server restart.

Start the server with PREFECT_SERVER_EVENTS_CAUSAL_ORDERING=flows.event_ordering
(docs/operations/server.md). Why: a flow-run state event names the state event before it (`follows`) when
the two are less than 5 minutes apart, and Prefect's automations hold an event back until the
one it follows has been seen. Prefect 3.8.8 remembers the events it has seen in memory only
(prefect/server/events/ordering/memory.py), so after a restart a run's `Completed`, which
follows a `Running` seen before the restart, is held back for 15 minutes (PRECEDING_EVENT_LOOKBACK):
the heartbeat automation, which never sees it, marks the finished run Crashed (the action fails:
"Run is already in terminal state"), and a real `Crashed` is held back the same way, so the
resume automation reschedules that run 15 minutes late. Upstream: PrefectHQ/prefect#21932.

This ordering is Prefect's own, except that an event whose leader this server cannot have
seen, because the leader may have come before the server started, is handled at once.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from prefect.server.events.ordering import EventArrivedEarly
from prefect.server.events.ordering import memory
from prefect.server.events.schemas.events import ReceivedEvent
from prefect.types._datetime import now

# Prefect links a state event to the one before only when they are this close (a local of
# prefect/server/models/events.py: _timing_is_tight).
TIGHT_TIMING = timedelta(minutes=5)
# When the server imported this: no later than its first event (Prefect imports it then).
STARTED = now("UTC")


def leader_may_predate_start(event: ReceivedEvent) -> bool:
    return event.occurred - TIGHT_TIMING < STARTED


class CausalOrdering(memory.CausalOrdering):
    # Prefect's class keeps one instance per scope in class attributes: ours are apart
    _instances: dict[str, memory.CausalOrdering] = {}
    _locks: dict[str, asyncio.Lock] = {}

    async def wait_for_leader(self, event: ReceivedEvent) -> None:
        try:
            await super().wait_for_leader(event)
        except EventArrivedEarly:
            if not leader_may_predate_start(event):
                raise
            await self.forget_follower(event)
            self._log(event, "follows %s, which may have come before the server started: "
                             "handled now", event.follows)
