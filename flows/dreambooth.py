"""The DreamBooth flow: the order of the steps, nothing else."""

import time

from prefect import flow, get_run_logger

from tasks.caption_photos import caption_photos
from tasks.captions.manifest import CaptionSettings
from tasks.check_tokens import check_tokens
from tasks.config import DreamBoothConfig
from tasks.export.outputs import ExportResult
from tasks.export_model import export_model
from tasks.fetch_base_model import fetch_base_model
from tasks.generate_class_images import generate_class_images
from tasks.open_session import open_session
from tasks.plan_training import plan_training
from tasks.prepare_photos import prepare_photos
from tasks.session_storage import result_storage, session_lease
from tasks.reports.summary import RunFacts
from tasks.train_chunk import train_chunk
from tasks.ui_artifacts import publish_summary, start_training_progress
from tasks.validate_photos import validate_photos


@flow(name="dreambooth-train", flow_run_name="{config.session}")
def dreambooth_train(config: DreamBoothConfig) -> ExportResult:
    """Fine-tune a Stable Diffusion model on a session's photos, resumably."""
    began = time.monotonic()
    with session_lease(config):  # one writer per session
        results = result_storage(config)  # task results beside the sessions
        ref = open_session(config)
        validate_photos(ref, config)  # before the model download: bad photos stop the run here
        model = fetch_base_model(config)
        dataset = prepare_photos(ref, config.photos, config.resolution, model)
        captions = caption_photos(ref, dataset, model, CaptionSettings(
            token=config.token, template=config.instance_prompt, class_word=config.class_word,
            class_template=config.class_prompt))
        check_tokens(ref, model, captions, config.bad_token)
        class_images = generate_class_images(ref, model, dataset.resolution, config)
        plan = plan_training(ref, config, model, dataset, captions, class_images)
        progress = start_training_progress(plan)
        # A chunk past the last committed checkpoint cannot have a valid cached result.
        chunks = [train_chunk.with_options(refresh_cache=chunk.end > plan.resume_step, **results)(
            plan, chunk, progress, return_state=True) for chunk in plan.chunks]
        outcomes = [state.result() for state in chunks]
        exported = export_model.with_options(refresh_cache=not plan.exported, **results)(plan, return_state=True)
        cached = sum(state.name == "Cached" for state in chunks)
        trained = sum(o.trained_steps for o, s in zip(outcomes, chunks) if s.name != "Cached")
        get_run_logger().info("Trained %d steps in this run; %d of %d chunks were cached%s", trained,
                              cached, len(chunks), "; export was cached" if exported.name == "Cached" else "")
        publish_summary(ref, RunFacts(time.monotonic() - began, trained, len(chunks), cached), progress)
        return exported.result()
