"""The commands on a trained session: export a step, evaluate steps, generate images."""

from __future__ import annotations

import os
import sys
from typing import Any

from dreambooth_core.errors import ConfigError
from flows.cli_flags import (
    add_storage_flags,
    check_device,
    flag_name,
    invalid_settings,
    trained_base_model,
    trained_session_config,
)


def add_session_commands(commands) -> None:
    _add_export_command(commands)
    _add_evaluate_command(commands)
    _add_generate_command(commands)
    _add_publish_command(commands)


def _add_publish_command(commands) -> None:
    publish = commands.add_parser(
        "publish", help="Upload a session's model and a generated model card to a Hugging Face model repo.",
        description="Upload the session's final outputs (or step N's export, exported first if it is not "
                    "yet) to the model repo USER/NAME, created if needed, with a model card: base model and "
                    "license, trigger words, example prompts, settings, samples, evaluation, and the tools "
                    "each file loads in. A rerun uploads only what changed. The token comes from "
                    "--hf-credentials-block, else HF_TOKEN, else `hf auth login`; it is never printed or "
                    "stored. No Prefect server is needed (except to read a block).")
    publish.add_argument("--session", required=True, help="The trained session.")
    publish.add_argument("--repo", required=True, help="The model repo, USER/NAME or ORGANISATION/NAME.")
    publish.add_argument("--private", action="store_true", help="Create the repo private (an existing "
                         "repo keeps its visibility).")
    publish.add_argument("--step", type=int, default=None, help="Publish this step (a committed checkpoint "
                         "or snapshot; dreambooth status lists them) instead of the final outputs.")
    add_storage_flags(publish)
    publish.add_argument("--hf-credentials-block", default=None, help="A hugging-face-credentials block "
                         "holding a token with write access (read from the Prefect server at "
                         "PREFECT_API_URL; default: HF_TOKEN).")


def _add_export_command(commands) -> None:
    export = commands.add_parser(
        "export", help="Export the model at any committed checkpoint or snapshot, without training.",
        description="Write the files the final export writes (full model, LoRA or embedding) for "
                    "step N into the session's exports/step-NNNNNN/, from its committed checkpoint "
                    "(exact) or else its snapshot (fp16). No Prefect server is needed.")
    export.add_argument("--session", required=True, help="The session to export from.")
    export.add_argument("--step", type=int, required=True,
                        help="The step: one with a committed checkpoint or a snapshot "
                             "(dreambooth status SESSION lists the kept checkpoints and snapshots).")
    add_storage_flags(export)
    export.add_argument("--export-precision", choices=("fp16", "fp32"), default=None,
                        help="Precision of the files (default: the session's --export-precision).")


def _add_evaluate_command(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="Measure subject and prompt fidelity of a session's steps and recommend one.",
        description="Render the DreamBooth paper's prompts for each subject with fixed seeds, at the "
                    "base model (step 0) and each step asked for, and measure subject fidelity (DINO, "
                    "CLIP-I: similarity to the prepared photos) and prompt fidelity (CLIP-T). Writes "
                    "reports/evaluation.csv, .png and .json (the recommended step and its rule).")
    evaluate.add_argument("--session", required=True, help="The session to evaluate.")
    evaluate.add_argument("--steps", default=None, help="Comma-separated steps with a committed checkpoint "
                          "or snapshot (default: all of them).")
    add_storage_flags(evaluate)
    evaluate.add_argument("--judges", choices=("hub", "tiny"), default="hub", help="hub: the paper's "
                          "facebook/dino-vits16 and openai/clip-vit-large-patch14 (and ArcFace for people), "
                          "fetched once; tiny: "
                          "small random ones, offline, for trying it out (default: hub).")
    evaluate.add_argument("--prompts", type=int, default=4, help="Prompts per subject, of the paper's 25 "
                          "(default: 4).")
    evaluate.add_argument("--images", type=int, default=2, help="Images per prompt (default: 2).")
    evaluate.add_argument("--inference-steps", type=int, default=20, help="Denoising steps (default: 20).")
    evaluate.add_argument("--seed", type=int, default=0, help="Seed of the images' noise (default: 0).")


def _add_generate_command(commands) -> None:
    from dreambooth_core.config import GenerationSettings

    fields = GenerationSettings.model_fields
    generate = commands.add_parser(
        "generate", help="Render prompts with a session's trained model (or any kept step) to try it.",
        description="Render each prompt with the session's newest step (the finished model once "
                    "training is done) or --step N, into the session's generations/ and a Prefect "
                    "artifact. {token} and {class} in a prompt are filled in per subject.")
    generate.add_argument("prompts", nargs="+", metavar="PROMPT",
                          help="e.g. \"a photo of {token} {class} on the beach\"")
    generate.add_argument("--session", required=True, help="The trained session.")
    generate.add_argument("--step", type=int, default=None, help="A step with a committed checkpoint or "
                          "snapshot (default: the newest; dreambooth status SESSION lists them).")
    add_storage_flags(generate)
    for name, kind in (("seed", int), ("count", int), ("guidance_scale", float), ("inference_steps", int),
                       ("negative_prompt", str), ("width", int), ("height", int)):
        default = fields[name].default
        generate.add_argument(flag_name(name), type=kind, default=default,
                              help=fields[name].description + (f" (default: {default})" if default not in
                                                               (None, "") else ""))
    generate.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda.")


def export(args: dict[str, Any]) -> int:
    from dreambooth_core.export.step_export import export_step, require_step, trained_session

    session, config = trained_session_config(args)
    require_step(session, args["step"])  # before the model is loaded
    model = trained_base_model(config, session)
    trained = trained_session(session, model.path, model.family)
    result = export_step(session, trained, args["step"],
                         args["export_precision"] or config.export.export_precision)
    print(f"Exported step {result.step} of session {session.name!r} from its {result.source} "
          f"({result.precision}) to {session.url}/{result.folder}/:")
    sizes: dict[str, int] = {}
    for path, size in result.files.items():  # a folder's files as one line
        name, _, inside = path.removeprefix(result.folder + "/").partition("/")
        sizes[name + ("/" if inside else "")] = sizes.get(name + ("/" if inside else ""), 0) + size
    print("\n".join(f"  {name} ({size / 1e6:.1f} MB)" for name, size in sizes.items()))
    return 0


def evaluate(args: dict[str, Any]) -> int:
    from dreambooth_core.evaluation.evaluate import EvaluationSpec
    from dreambooth_core.evaluation.face_identity import fetch_face_model
    from dreambooth_core.evaluation.judges import fetch_judges, load_judges
    from dreambooth_core.evaluation.session_evaluation import evaluate_session, has_person
    from dreambooth_core.families import family_of
    from dreambooth_core.generation.pipeline import cpu_render_warning
    from dreambooth_core.export.step_export import exportable_steps, require_step, trained_session
    from dreambooth_core.model.cache import model_cache_dir
    from dreambooth_core.session.dataset_manifest import require_dataset_manifest
    from dreambooth_core.training.devices import resolve_device

    session, config = trained_session_config(args)
    steps = _evaluation_steps(args["steps"], exportable_steps(session), session.name)
    for step in steps:  # before the judges are fetched
        require_step(session, step, "--steps")
    _check_evaluation_flags(args)
    manifest = require_dataset_manifest(session)
    images = args["prompts"] * args["images"] * len(manifest.subjects) * (len(steps) + 1)
    _warn_on_cpu(resolve_device("auto"), config.base_model.model, images, args["inference_steps"],
                 manifest.resolution, cpu_render_warning)
    model = trained_base_model(config, session)
    trained = trained_session(session, model.path, model.family)
    hf_token = os.environ.get("HF_TOKEN")
    face_model = (fetch_face_model(args["judges"], model_cache_dir(), hf_token)
                  if has_person(session, config.checks.subject_type) else None)
    judges = load_judges(*fetch_judges(args["judges"], model_cache_dir(), hf_token), face_model)
    spec = EvaluationSpec(resolution=manifest.resolution, seed=args["seed"], prompts=args["prompts"],
                          images_per_prompt=args["images"], inference_steps=args["inference_steps"],
                          guidance_scale=family_of(model.family).default_guidance)
    report = evaluate_session(session, trained, steps, judges, args["judges"], spec,
                              config.checks.subject_type, resolve_device("auto"))
    print(f"Evaluated steps {', '.join(map(str, report.steps))} of session {session.name!r} "
          f"(0: the base model): {session.url}/reports/evaluation.csv, .png")
    print(f"Recommended: {report.recommendation.reason}.\nRule: {report.recommendation.rule}.")
    return 0


def _check_evaluation_flags(args: dict[str, Any]) -> None:
    """--prompts, --images and --inference-steps within the bounds of the settings they stand for."""
    from pydantic import ValidationError

    from dreambooth_core.config import EvaluationSettings

    flags = {"evaluation_prompts": "prompts", "evaluation_images": "images",
             "evaluation_inference_steps": "inference_steps"}
    try:
        EvaluationSettings(**{setting: args[flag] for setting, flag in flags.items()})
    except ValidationError as exc:
        raise invalid_settings(exc, flags) from None


def generate(args: dict[str, Any]) -> int:
    """Checked here before a server starts (the session, the step, the prompts' length), then
    run as the dreambooth-generate flow."""
    from pydantic import ValidationError

    from dreambooth_core.config import GenerationSettings
    from dreambooth_core.evaluation.generations import checked_request, chosen_step
    from dreambooth_core.export.step_export import trained_session
    from dreambooth_core.generation.pipeline import cpu_render_warning
    from dreambooth_core.session.dataset_manifest import require_dataset_manifest
    from dreambooth_core.training.devices import resolve_device
    from flows.temporary_server import temporary_server

    session, config = trained_session_config(args)
    try:
        settings = GenerationSettings(**{name: args[name] for name in GenerationSettings.model_fields})
    except ValidationError as exc:
        raise invalid_settings(exc) from None
    check_device(args["device"])
    chosen_step(session, args["step"])  # before the model is fetched
    model = trained_base_model(config, session)
    trained = trained_session(session, model.path, model.family)
    prompts, step, source = checked_request(session, trained, args["prompts"], args["step"])
    resolution = require_dataset_manifest(session).resolution
    pixels = (settings.width or resolution) * (settings.height or resolution)
    _warn_on_cpu(resolve_device(args["device"]), config.base_model.model, len(prompts) * settings.count,
                 settings.inference_steps, round(pixels ** 0.5), cpu_render_warning)
    with temporary_server() as server:
        from flows.generate import dreambooth_generate
        from flows.quiet_errors import hide_user_error_tracebacks

        hide_user_error_tracebacks()
        server.wait_ready()
        with server.run_settings():
            result = dreambooth_generate(session.name, prompts, args["storage"], args["storage_block"], step,
                                         settings, args["device"])
    count = sum(len(p.images) for p in result.prompts)
    print(f"Rendered {count} image(s) of session {session.name!r} at step {result.step} (from its "
          f"{result.source}) into {session.url}/{result.folder}/ (grid: {result.grid.rsplit('/', 1)[1]})")
    return 0


def _warn_on_cpu(device, model: str, images: int, inference_steps: int, resolution: int, warning) -> None:
    message = warning(model, images, inference_steps, resolution) if device.type == "cpu" else None
    if message:
        print(f"warning: {message}", file=sys.stderr)


def _evaluation_steps(text: str | None, available: dict[int, str], name: str) -> list[int]:
    if text is None:
        return sorted(available)
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ConfigError(f"--steps {text!r}: give steps as numbers separated by commas, e.g. "
                          f"--steps 200,400 (session {name!r} has "
                          f"{', '.join(map(str, sorted(available)))}).") from None


def publish(args: dict[str, Any]) -> int:
    from dreambooth_core.export.step_export import export_step, require_step, trained_session
    from dreambooth_core.publish.hub import check_repo_name, publish_session
    from dreambooth_core.publish.token import require_token
    from dreambooth_core.session.paths import export_folder
    from tasks.publish_session import publish_token

    check_repo_name(args["repo"])
    session, config = trained_session_config(args)
    step = args["step"]
    token = publish_token(args["hf_credentials_block"] or config.inputs.hf_credentials_block)
    require_token(token)  # before a step is exported
    if step is not None and not session.exists(export_folder(step)):
        require_step(session, step)  # before the model is loaded
        model = trained_base_model(config, session)
        export_step(session, trained_session(session, model.path, model.family), step,
                    config.export.export_precision)
    result = publish_session(session, args["repo"], token, args["private"], step)
    uploaded = (f"{len(result.uploaded)} file(s) uploaded" if result.uploaded
                else "nothing changed, nothing uploaded")
    deleted = f", {len(result.deleted)} left over from an earlier publish deleted" if result.deleted else ""
    print(f"Published step {result.step} of session {session.name!r} to {result.url} ({uploaded}{deleted})")
    return 0


HANDLERS = {"export": export, "evaluate": evaluate, "generate": generate, "publish": publish}
