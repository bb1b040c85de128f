"""@task: sample images from a committed checkpoint, saved in the session and listed in the UI."""

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.dataset.prepare import MANIFEST
from tasks.generation import samples as sampling
from tasks.generation.trained_weights import load_trained_modules
from tasks.model.fetch import LocalModel
from tasks.session import Session
from tasks.session_state import SessionRef, artifact_key
from tasks.training.model_parts import resolve_device


def publish_samples(session: Session, samples: sampling.Samples) -> None:
    """The artifact of a checkpoint's samples; call it wherever samples are rendered in a task."""
    create_markdown_artifact(sampling.samples_markdown(session, samples),
                             key=artifact_key("samples", session.name),
                             description=f"Samples of session {session.name} at step {samples.step}")


@task(name="render-samples", task_run_name="samples at step {step}")
def render_samples(ref: SessionRef, model: LocalModel, step: int, resolution: int,
                   prompts: list[str] = (), seed: int = 0, device: str = "auto",
                   images_per_prompt: int = sampling.DEFAULT_IMAGES_PER_PROMPT,
                   steps: int = sampling.DEFAULT_SAMPLE_STEPS) -> sampling.Samples:
    """`prompts`: the user's own, after the default 'photo of <token> <class>' of each subject."""
    session, log = ref.open(), get_run_logger()
    settings = sampling.SampleSettings(
        prompts=sampling.sample_prompts(session.read_json(MANIFEST)["subjects"], list(prompts)),
        resolution=resolution, seed=seed, images_per_prompt=images_per_prompt, steps=steps)
    samples = sampling.saved_samples(session, step, settings)
    if samples is None:
        target = resolve_device(device)
        unet, text_encoder = load_trained_modules(session, model.path, step, target)
        samples = sampling.render_samples(session, step, model.path, settings, target, unet, text_encoder,
                                          log=log)
    else:
        log.info("Samples at step %d already saved (%s)", step, samples.grid)
    publish_samples(session, samples)
    return samples
