"""The event a finished training run emits, `dreambooth.session.trained`: a deployment's trigger
(prefect.yaml: generate-local) can render prompts with the new model when it arrives.

The payload names the session as a flow parameter would (session, storage, storage_block, step).
"""

from __future__ import annotations

from dreambooth_core.config import DreamBoothConfig
from flows.upload import shared_storage

TRAINED = "dreambooth.session.trained"


def emit_trained(config: DreamBoothConfig, step: int) -> None:
    """Tell the Prefect server the session is trained to `step` (nothing without a server)."""
    from prefect.events import emit_event

    storage = shared_storage(config.inputs.storage)
    emit_event(
        event=TRAINED,
        resource={"prefect.resource.id": f"dreambooth.session.{config.session}",
                  "prefect.resource.name": config.session, "dreambooth.storage": storage},
        payload={"session": config.session, "storage": storage,
                 "storage_block": config.inputs.storage_block, "step": step})
