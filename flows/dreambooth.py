"""The DreamBooth flow: the order of the steps, nothing else.

Each step is a task (tasks/<step>.py) that calls the plain library (dreambooth_core/).
"""

import time

from prefect import flow, get_run_logger

from dreambooth_core.config import DreamBoothConfig
from dreambooth_core.export.outputs import ExportResult
from dreambooth_core.families import family_of
from dreambooth_core.families.base_model import bucket_step_for
from dreambooth_core.reports.status import RunFacts
from dreambooth_core.training.live import LiveTraining
from flows.session_storage import result_storage, session_lease
from flows.trained_event import emit_trained
from tasks.artifacts import publish_summary, start_training_progress
from tasks.caption_photos import caption_photos
from tasks.check_tokens import check_tokens
from tasks.export_model import export_model
from tasks.fetch_base_model import fetch_base_model
from tasks.generate_class_images import generate_class_images
from tasks.mask_photos import mask_photos
from tasks.open_session import open_session
from tasks.plan_training import plan_training
from tasks.prefect_api import API
from tasks.prepare_evaluation import prepare_evaluation
from tasks.prepare_photos import prepare_photos
from tasks.publish_session import publish_session
from tasks.rebuild_missed_steps import rebuild_missed_steps
from tasks.train_chunk import train_chunk
from tasks.validate_photos import validate_photos


@flow(name="dreambooth-train", flow_run_name="{config.session}")
def dreambooth_train(config: DreamBoothConfig) -> ExportResult:
    """Fine-tune a Stable Diffusion model on a session's photos, resumably."""
    began = time.monotonic()
    # The API may stop answering at any point: training goes on (tasks/prefect_api.py); the body's
    # outcome is kept for the CLI, in case the engine cannot report the run's end. The lease: one
    # writer per session; `live`: its trainer and commits.
    with API.run() as outcome, session_lease(config), LiveTraining() as live:
        results = result_storage(config.inputs)  # task results beside the sessions
        ref = open_session(config)
        photos = validate_photos(ref, config)  # before the model download: bad photos stop the run here
        model = fetch_base_model(config.base_model, config.inputs.hf_credentials_block)
        family_of(model.family).check_settings(config.training)  # what the family cannot train stops here
        resolution = config.training.resolution_for(model.family.resolution)  # decided once, here
        dataset = prepare_photos(ref, photos, resolution, bucket_step_for(config.training, model, resolution))
        captions = caption_photos(ref, dataset, model, config.captions, config.base_model.model)
        check_tokens(ref, model, captions, config.checks.bad_token)
        if config.training.masked_loss:
            mask_photos(ref, config.base_model.model, captions)
        class_images = generate_class_images(ref, model, resolution, config.training,
                                             config.captions.class_prompt, config.runtime.device)
        plan = plan_training(ref, config, model, dataset, captions, class_images)
        evaluation = prepare_evaluation(plan, config)  # None unless --evaluate-every
        rebuild_missed_steps(plan, config.samples, evaluation)  # what a stopped run did not render
        progress = start_training_progress(plan)
        chunks = []
        for chunk in plan.chunks:  # a failed chunk ends the run: its error is the one reported
            # Cached only while the session holds the chunk's checkpoint: its key says who committed it.
            chunks.append(train_chunk.with_options(**results)(
                plan, chunk, config.samples, evaluation, live, progress, return_state=True))
            if chunks[-1].is_failed():
                break
        outcomes = [state.result() for state in chunks]
        exported = export_model.with_options(**results)(plan, config.export, live, return_state=True)
        cached = sum(state.name == "Cached" for state in chunks)
        trained = sum(o.trained_steps for o, s in zip(outcomes, chunks) if s.name != "Cached")
        get_run_logger().info("Trained %d steps in this run; %d of %d chunks were cached%s", trained,
                              cached, len(chunks), "; export was cached" if exported.name == "Cached" else "")
        publish_summary(ref, RunFacts(time.monotonic() - began, trained, len(chunks), cached), progress)
        result = exported.result()
        if config.export.publish_to:  # the finished model publishes itself (--publish-to)
            publish_session(ref, config.export.publish_to, config.export.publish_private, None,
                            config.inputs.hf_credentials_block)
        emit_trained(config, result.step)  # a deployment's trigger may try the model (prefect.yaml)
        return outcome.returns(result)
