"""Prefect automations that bring a crashed run (training, or rendering a trained model) back.

Two automations, created or updated by `dreambooth automations apply`:

- *mark silent runs crashed*: a run whose machine vanished (a preempted VM, a
  killed worker) sends no more heartbeats; after `heartbeat_timeout` seconds
  without one it is marked Crashed. Heartbeats come from the flow engine every
  PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds: HEARTBEAT_SECONDS, the least
  Prefect allows, in every deployment of prefect.yaml.
- *resume crashed training*: a Crashed run that came from a deployment, and
  not cancelled within CANCEL_SETTLE_SECONDS, is put back to Scheduled, so a
  worker runs it again; training continues from the session's last committed
  checkpoint, a render renders again (into a new generations/ folder). The server counts a
  run's attempts (`prefect.run-count`); only runs with fewer than
  `max_attempts` are rescheduled, so a crash that happens every time stops.
"""

from __future__ import annotations

from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture

from flows.upload import FLOW_NAME

FLOW_NAMES = [FLOW_NAME, "dreambooth-generate"]  # the flows of prefect.yaml's deployments
RESUME = "dreambooth: resume crashed training"
MARK_SILENT = "dreambooth: mark silent training runs crashed"
TERMINAL_EVENTS = {f"prefect.flow-run.{name}" for name in ("Completed", "Failed", "Cancelled", "Crashed")}
OUR_RUNS = {"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAMES}
DEPLOYMENT_RUNS = {"prefect.resource.role": "deployment"}
# How long after a crash a cancellation may still arrive (a worker reports Cancelled once the
# flow run's process has exited, within Prefect's 30 s kill grace period).
CANCEL_SETTLE_SECONDS = 40
# PREFECT_FLOWS_HEARTBEAT_FREQUENCY of every deployment in prefect.yaml (30 s: Prefect's least).
HEARTBEAT_SECONDS = 30
# One heartbeat may be lost (a server restart of up to 30 s) with 15 s to spare; a run whose
# machine is lost is marked Crashed 45 to 75 s later, 60 s on average (and up to the few seconds
# Prefect takes to evaluate the trigger).
DEFAULT_HEARTBEAT_TIMEOUT = 2 * HEARTBEAT_SECONDS + 15


def resume_automation(max_attempts: int, settle_seconds: int = CANCEL_SETTLE_SECONDS) -> Automation:
    run_counts = [str(n) for n in range(max_attempts)]  # attempts so far: 0 if it never started
    return Automation(
        name=RESUME,
        description=f"Reschedule a crashed {' or '.join(FLOW_NAMES)} run from a deployment, at "
                    f"most {max_attempts} attempts in all; training resumes from its last checkpoint.",
        # Proactive: a run cancelled by a user can report Crashed before its worker reports
        # Cancelled; only a crash that no cancellation follows is rescheduled.
        trigger=EventTrigger(
            after={"prefect.flow-run.Crashed"},
            expect={"prefect.flow-run.Cancelling", "prefect.flow-run.Cancelled"},
            match={"prefect.resource.id": "prefect.flow-run.*", "prefect.run-count": run_counts},
            match_related=[OUR_RUNS, DEPLOYMENT_RUNS],
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive, threshold=1, within=timedelta(seconds=settle_seconds)),
        actions=[ChangeFlowRunState(state=StateType.SCHEDULED, name="AwaitingRetry",
                                    message="Rescheduled after a crash by the automation "
                                            f"{RESUME!r}; resuming from the last checkpoint")],
    )


def mark_silent_automation(heartbeat_timeout: int) -> Automation:
    return Automation(
        name=MARK_SILENT,
        description=f"Mark a {' or '.join(FLOW_NAMES)} run Crashed when no heartbeat came for "
                    f"{heartbeat_timeout} s (its machine is gone).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat"} | TERMINAL_EVENTS,
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=OUR_RUNS,
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive, threshold=1, within=timedelta(seconds=heartbeat_timeout)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message="No heartbeat for "
                                    f"{heartbeat_timeout} s: the machine running it is gone")],
    )


def apply_automations(max_attempts: int, heartbeat_timeout: int,
                      settle_seconds: int = CANCEL_SETTLE_SECONDS) -> list[tuple[str, str]]:
    """Create or update both automations; returns [(name, 'created' | 'updated')]."""
    done = []
    for wanted in (mark_silent_automation(heartbeat_timeout),
                   resume_automation(max_attempts, settle_seconds)):
        try:
            existing = Automation.read(name=wanted.name)
        except ValueError:  # not found
            wanted.create()
            done.append((wanted.name, "created"))
            continue
        wanted.id = existing.id
        wanted.update()
        done.append((wanted.name, "updated"))
    return done
