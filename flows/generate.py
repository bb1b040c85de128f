"""The generate flow: render prompts with a trained session's model (the newest step, or one
chosen), into the session's generations/ and the Prefect UI."""

from prefect import flow

from dreambooth_core.config import GenerationSettings
from dreambooth_core.evaluation.generations import Generation
from flows.session_storage import use_blocks
from tasks.fetch_base_model import fetch_base_model
from tasks.open_trained_session import open_trained_session
from tasks.render_prompts import render_prompts


@flow(name="dreambooth-generate", flow_run_name="{session}")
def dreambooth_generate(session: str, prompts: list[str], storage: str = "sessions",
                        storage_block: str | None = None, step: int | None = None,
                        settings: GenerationSettings = GenerationSettings(),
                        device: str = "auto") -> Generation:
    """Render `prompts` ({token} and {class} are filled in per subject) with session `session`'s
    model at `step` (default: the newest committed checkpoint or snapshot; the finished model
    once training is done)."""
    if storage_block:
        use_blocks()
    trained = open_trained_session(session, storage, storage_block)
    model = fetch_base_model(trained.base_model, trained.hf_credentials_block)
    return render_prompts(trained.session, model, trained.base_model.model, prompts, step, settings, device)
