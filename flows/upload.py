"""`dreambooth upload`: put photos into a session and tell Prefect, whose trigger starts training.

The event `dreambooth.photos.uploaded` names the session as its resource and
carries the session's configuration; a deployment in prefect.yaml whose
trigger matches the event's `dreambooth.deployment` label runs the training
flow with that configuration (the photos are then the session's own copies).
"""

from __future__ import annotations

from pathlib import Path

from dreambooth_core.config import DreamBoothConfig
from dreambooth_core.errors import ConfigError
from dreambooth_core.photos.originals import import_photos
from dreambooth_core.session.state import open_or_create
from dreambooth_core.session.storage import open_named_session

UPLOADED = "dreambooth.photos.uploaded"
FLOW_NAME = "dreambooth-train"  # the flow of the deployments that train an upload


def shared_storage(storage: str) -> str:
    """A local folder as an absolute path: the worker that trains runs in another directory."""
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def upload_photos(config: DreamBoothConfig) -> tuple[DreamBoothConfig, int]:
    """Create or open the session, copy the photos in; returns the configuration a triggered
    run should use (the session's photos, storage as the worker sees it) and the photo count."""
    inputs = config.inputs.model_copy(update={"storage": shared_storage(config.inputs.storage)})
    config = config.model_copy(update={"inputs": inputs})
    session = open_named_session(inputs.storage, inputs.storage_block, config.session)
    open_or_create(session, config)
    photos = import_photos(session, inputs.photos)
    return (config.model_copy(update={"inputs": inputs.model_copy(update={"photos": None})}),
            len(photos.photos))


def emit_uploaded(config: DreamBoothConfig, deployment: str, api_url: str) -> str:
    """Send the event to the Prefect server at `api_url` and return its id once the server has
    accepted it; a ConfigError when it has not. Sent in one HTTP request, not through Prefect's
    events worker (emit_event): the worker sends in the background and drops what fails with a
    log line, so a lost event would look sent."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.events import Event
    from prefect.settings import PREFECT_API_URL, temporary_settings

    event = Event(
        event=UPLOADED,
        resource={"prefect.resource.id": f"dreambooth.session.{config.session}",
                  "prefect.resource.name": config.session,
                  "dreambooth.storage": config.inputs.storage,
                  "dreambooth.deployment": deployment},
        payload={"config": config.model_dump(mode="json")},
    )
    try:  # to the server that was checked, whatever Prefect read when it was imported
        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            client.request("POST", "/events", json=[event.model_dump(mode="json")])
    except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: Prefect's "Failed to reach API"
        raise ConfigError(
            f"the photos are in session {config.session!r}, but the Prefect server at {api_url} did not "
            f"accept the event that starts its training ({type(exc).__name__}: {exc}), so no run was "
            "triggered. Once the server answers, run the same upload again (the photos are not copied "
            f"twice), or train it here: dreambooth train --session {config.session} --storage "
            f"{config.inputs.storage}") from None
    return str(event.id)


def name_triggered_run(config: DreamBoothConfig, deployment: str, api_url: str, wait: float = 30) -> str:
    """Give the run the deployment's trigger creates the session's name, and say what became of it.
    Prefect names a triggered run at random ("olivine-toucanet") until it starts; a queue of them
    in the UI or `prefect flow-run ls` would not say which session waits where."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL, temporary_settings

    wanted = {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING"]}}},
              "deployments": {"name": {"any_": [deployment]}}, "sort": "START_TIME_DESC", "limit": 100}
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        try:
            client.request("GET", f"/deployments/name/{FLOW_NAME}/{deployment}")
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code == 404:
                return f"no deployment {FLOW_NAME}/{deployment} is registered, so no run was triggered"
            raise
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for run in client.request("POST", "/flow_runs/filter", json=wanted).json():
                if run["parameters"].get("config", {}).get("session") == config.session:
                    client.request("PATCH", f"/flow_runs/{run['id']}", json={"name": config.session})
                    return f"flow run {run['id']} ({config.session}) is {run['state_name']}"
            time.sleep(0.5)
    return f"its run is not queued yet (is the trigger of {deployment!r} deployed?)"
