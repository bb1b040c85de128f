"""@task: render prompts with a trained session's model at one step; show them in the UI."""

from prefect import get_run_logger, task

from dreambooth_core.config import GenerationSettings
from dreambooth_core.evaluation.generations import (
    Generation,
    checked_request,
    generate,
    generation_markdown,
)
from dreambooth_core.export.step_export import require_trained_model, trained_session
from dreambooth_core.families.base_model import LocalModel
from dreambooth_core.session.storage import SessionRef
from dreambooth_core.training.devices import resolve_device
from tasks.artifacts import artifact_key, publish_image


@task(name="render-prompts", task_run_name="render {session.name}")
def render_prompts(session: SessionRef, model: LocalModel, model_name: str, prompts: list[str],
                   step: int | None, settings: GenerationSettings, device: str = "auto") -> Generation:
    """`model_name`: the base model as the session names it (for its error messages)."""
    log, opened = get_run_logger(), session.open()
    require_trained_model(opened, model.digest, model_name)
    trained = trained_session(opened, model.path, model.family)
    filled, chosen, source = checked_request(opened, trained, prompts, step)
    generation = generate(opened, trained, filled, chosen, source, settings, resolve_device(device), log)
    publish_image(opened, generation.grid, artifact_key("generations", opened.name),
                  f"Images of session {opened.name} at step {generation.step}",
                  generation_markdown(opened, generation))
    return generation
