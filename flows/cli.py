"""The `dreambooth` command."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from dreambooth_core.config import SECTIONS, CaptionSettings, DreamBoothConfig, TrainingSettings
from dreambooth_core.errors import USER_ERRORS, ConfigError, SessionError
from dreambooth_core.families.expected import SMALLEST_RESOLUTION
from dreambooth_core.session.folder import Session
from dreambooth_core.session.state import kept_in_memory, stored_config
from flows.cli_flags import (
    invalid_settings,
    add_storage_flags,
    check_base_precision,
    check_device,
    check_device_settings,
    flag_name,
    flag_storage,
    open_flag_session,
    refuse_process_local_storage,
    setting,
    warn_if_process_local,
)
from flows.quiet_libraries import quiet_libraries
from flows.session_commands import HANDLERS as SESSION_COMMANDS
from flows.session_commands import add_session_commands

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, with its description and default, grouped by section."""
    _add_flag(parser, "session", DreamBoothConfig.model_fields["session"])
    for section, kind in SECTIONS.items():
        group = parser.add_argument_group(section.replace("_", " "),
                                          DreamBoothConfig.model_fields[section].description)
        for name, field in kind.model_fields.items():
            _add_flag(group, name, field)


def _add_flag(parser, name: str, field: FieldInfo) -> None:
    kind = _base_type(field.annotation)
    options: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
    if typing.get_origin(kind) is Literal:
        options["choices"] = typing.get_args(kind)
    elif kind in (int, float):
        options["type"] = kind
    elif kind is bool:
        options["action"] = argparse.BooleanOptionalAction
    default = "" if field.is_required() or field.default is None else f" (default: {field.default})"
    parser.add_argument(flag_name(name), help=field.description + default, required=field.is_required(),
                        **options)


def _base_type(annotation: Any) -> Any:
    """`int | None` -> int."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreambooth", description="Personalise Stable Diffusion "
                                     "with a few photos of a subject (DreamBooth), resumably.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="Train a session (new or resumed) and export it.",
                                description="Train a session; rerun the same command to resume.")
    _add_config_flags(train)
    plan = commands.add_parser(
        "plan", help="What --memory auto would choose on common GPUs, with estimated memory; no GPU needed.",
        description="For the session's settings (and the flags given now, as for train): the plan "
                    "--memory auto picks on a T4, L4, A100 and H100, its estimated peak GPU and host "
                    "memory and the checkpoint size, from one real training step on fake tensors "
                    "(seconds to a minute on a CPU; FLUX.1 about two).")
    _add_config_flags(plan)
    plan.add_argument("--steps-per-second", type=float, default=None,
                      help="Optimizer steps per second measured with these settings and --gpus (e.g. by "
                           "benchmarks/gpu_check.py): the plan adds the run's time and cost at that speed.")
    tokens = commands.add_parser(
        "tokens", help="Check an identifier with the base model's tokenizer; suggest rare ones.",
        description="How the base model's tokenizer splits WORD, whether a piece is a word the "
                    "model already knows, and a verdict (good / risky / bad) with the reason.")
    tokens.add_argument("word", nargs="?", help="The identifier to check, e.g. shrk.")
    tokens.add_argument("--model", default=setting("model").default,
                        help="Base model whose tokenizer judges the word (as for train; 'tiny' "
                             "works offline).")
    tokens.add_argument("--revision", default=None, help="Hub revision of --model.")
    tokens.add_argument("--suggest", action="store_true",
                        help="Also propose rare identifiers: 1-2 tokens, pronounceable, no common word.")
    _add_cloud_commands(commands)
    validate = commands.add_parser(
        "validate", help="Check a folder of photos before training: every photo's verdict, "
                         "every problem and its fix.",
        description="Check photos as training would: format, decoding, size, sharpness, light, "
                    "duplicates, faces, photo count and framing. Exit 0 when the set is usable, "
                    "2 when it is not.")
    validate.add_argument("--photos", required=True, help="Folder of photos (as for train).")
    validate.add_argument("--json", action="store_true", help="Print the report as JSON.")
    for name in ("resolution", "token", "class_word", "subject_type", "allow_several_faces"):
        field = setting(name)
        kind = _base_type(field.annotation)
        options: dict[str, Any] = {"dest": name, "default": field.default}
        if name == "resolution":
            options.update(type=int, default=SMALLEST_RESOLUTION)
        elif kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is Literal:
            options["choices"] = typing.get_args(kind)
        help_text = ("Training resolution the sizes are judged against" if name == "resolution"
                     else field.description)
        validate.add_argument(flag_name(name), help=f"{help_text} (default: {options['default']})",
                              **options)
    status = commands.add_parser(
        "status", help="Show sessions: steps done of total, last committed checkpoint, outputs.",
        description="What the session storage says about each session (or one): its state, "
                    "steps committed of the total, the last committed checkpoint, the latest "
                    "loss and the output files with their sizes. Reads the storage only; no "
                    "Prefect server is needed.")
    status.add_argument("session", nargs="?", help="One session to show in detail (default: all).")
    add_storage_flags(status)
    status.add_argument("--json", action="store_true", help="Print the status as JSON.")
    add_session_commands(commands)
    return parser


def _add_cloud_commands(commands) -> None:
    upload = commands.add_parser(
        "upload", help="Copy photos into a session and emit the event that starts its training "
                       "through a deployment (prefect.yaml).",
        description="Copy photos into the session's storage, then emit the Prefect event "
                    "dreambooth.photos.uploaded; the trigger of the deployment named by "
                    "--deployment starts a training run for the session. Takes the same "
                    "settings as train; they are stored in the session.")
    _add_config_flags(upload)
    upload.add_argument("--deployment", default="local", help="Which prefect.yaml deployment "
                        "trains it: local, docker-gpu, kubernetes-gpu, kubernetes-multinode or vertex-gpu "
                        "(default: local).")
    worker = commands.add_parser(
        "worker", help="Start a Prefect process worker that stops within a grace period.",
        description="Run `prefect worker start` for a process work pool. On SIGTERM or Ctrl-C "
                    "(a node drained, a deploy) its flow runs get SIGTERM: training commits a "
                    "checkpoint within --preemption-grace and the run ends Crashed, for the resume "
                    "automation to reschedule on the next worker; the worker ends within --grace.")
    worker.add_argument("--pool", default="local-process", help="The work pool (default: %(default)s).")
    worker.add_argument("--grace", type=float, default=30, help="Seconds from SIGTERM until "
                        "what is left is killed; give the service manager more (default: %(default)s, "
                        "Kubernetes' default; above training's --preemption-grace of 25).")
    automations = commands.add_parser(
        "automations", help="Set up the Prefect automations that resume crashed training runs.",
        description="Prefect automations on the server at PREFECT_API_URL.")
    actions = automations.add_subparsers(dest="action", required=True)
    apply = actions.add_parser(
        "apply", help="Create or update the automations (safe to run again).",
        description="Create or update two automations: one marks a training run Crashed when "
                    "its heartbeats stop (the machine is gone), one reschedules a crashed "
                    "training run from a deployment, which resumes from its last checkpoint.")
    apply.add_argument("--max-attempts", type=int, default=3, help="Attempts a run gets in "
                       "all, the first included; a run that crashes this often stays Crashed "
                       "(default: 3).")
    apply.add_argument("--heartbeat-timeout", type=int, default=None, help="Seconds without a "
                       "heartbeat before a running run counts as crashed (default: 75; "
                       "prefect.yaml's deployments send one every 30 s).")


def config_from_flags(flags: dict[str, Any], session: Session | None = None) -> DreamBoothConfig:
    """The session's stored configuration updated with the flags given now."""
    session = session or open_flag_session(flags)
    config = stored_config(session)
    stored = config.flat() if config else {}
    for name in ("photos", "lease_wait"):  # how this run was started, not settings of the session
        stored.pop(name, None)
    try:
        return DreamBoothConfig(**{**stored, **flags})
    except ValidationError as exc:
        raise invalid_settings(exc) from None


def check_before_run(flags: dict[str, Any]) -> DreamBoothConfig:
    """What needs no Prefect server, checked before one starts (about a second): the settings,
    the session name, the device, that the model cache and the storage take files, and that the
    photos folder can be listed."""
    from dreambooth_core.model.cache import model_cache_dir
    from dreambooth_core.photos.originals import require_photos

    session = open_flag_session(flags)
    with kept_in_memory(session):  # session.json read once for these checks (the run reads it again)
        config = config_from_flags(flags, session)
        check_device(config.runtime.device)
        check_device_settings(config)  # what the device lacks, then what the method or installation lacks
        check_base_precision(config.training, config.runtime.device)
        model_cache_dir()  # a ConfigError if it cannot hold the model
        warn_if_process_local(session.storage)
        session.check_writable()
        require_photos(session, config.inputs.photos)
    if config.export.publish_to:
        check_publish_token(config.inputs.hf_credentials_block)
    if config.base_model.vae:
        from dreambooth_core.model.vae import check_vae_spec

        check_vae_spec(config.base_model.vae)
    return config


def check_publish_token(block: str | None) -> None:
    """--publish-to needs a token: said now, not after hours of training (a block is read then)."""
    from dreambooth_core.publish.token import require_token

    if block is None:
        from huggingface_hub import get_token

        require_token(os.environ.get("HF_TOKEN") or get_token())


def train(flags: dict[str, Any]) -> int:
    from flows.temporary_server import temporary_server

    config = check_before_run(flags)
    if config.runtime.node_rank:  # a machine above 0 only trains what machine 0's pipeline orders
        return train_on_this_machine(config)
    with temporary_server() as server:  # starts while the libraries below are imported
        quiet_libraries()
        from dreambooth_core.families.family import import_model_classes
        from flows.dreambooth import dreambooth_train
        from flows.quiet_errors import hide_user_error_tracebacks

        hide_user_error_tracebacks()
        server.wait_ready(meanwhile=import_model_classes())  # imported now if the server is slower
        with server.run_settings():
            result = _train_reporting_lost_end(dreambooth_train, config)
    files = ", ".join(result.files) + (", diffusers/" if config.training.method == "dreambooth" else "")
    print(f"Done: session {config.session!r} trained to step {result.step}; outputs: {files}")
    return 0


def train_on_this_machine(config: DreamBoothConfig) -> int:
    """--node-rank above 0: this machine's training processes, until machine 0's run ends."""
    from dreambooth_core.families.base_model import fetch_base
    from dreambooth_core.model.cache import model_cache_dir
    from dreambooth_core.training.distributed.worker_group import WorkerGroup

    quiet_libraries()
    runtime = config.runtime
    log = logging.getLogger("dreambooth.machine")
    if not log.handlers:
        log.addHandler(logging.StreamHandler())
        log.setLevel(logging.INFO)
    # This machine's own copy of the base model, fetched before any rank starts: a rank can only find it
    # (in a process group, transformers writes a model's files on global rank 0 alone).
    fetch_base(config.base_model, model_cache_dir(), os.environ.get("HF_TOKEN"), log)
    group = WorkerGroup(runtime, config.training.gpus, log, pipeline=False)
    try:
        group.wait()
    finally:
        group.close()
    print(f"Done: machine {runtime.node_rank} of {runtime.nnodes} trained with machine 0 until its run ended")
    return 0


def _train_reporting_lost_end(flow, config: DreamBoothConfig):
    """The flow's result; when the Prefect API stopped answering and Prefect could not report the
    end of the flow run, the body's own outcome (its result, or its error), with a warning."""
    from tasks.prefect_api import API, is_api_failure

    try:
        return flow(config)
    except Exception as exc:
        if not (is_api_failure(exc) and API.outcome.ended) or exc is API.outcome.error:
            raise  # the run's own error (reported), or the run could not start
        _ending["skip_prefect_queues"] = True  # they would wait for the API at exit
        where = (f"--storage-block {config.inputs.storage_block}" if config.inputs.storage_block
                 else f"--storage {config.inputs.storage}")
        print(f"warning: the Prefect UI lost this run's end: its API did not answer when the run ended, "
              f"so flow run {config.session!r} may stay Running there. The session holds everything: "
              f"dreambooth status {config.session} {where}", file=sys.stderr)
        return API.outcome.get()


def plan(flags: dict[str, Any]) -> int:
    from dreambooth_core.families import family_of_folder
    from dreambooth_core.session.state import load_state
    from dreambooth_core.training.memory.gpu_plans import (cost_lines, plan_table, plans_on_common_gpus,
                                                           processes_per_machine)
    from dreambooth_core.training.memory.plan import eight_bit_problem

    speed = flags.pop("steps_per_second")  # of this plan, not a setting of the session
    if speed is not None and speed <= 0:
        raise ConfigError(f"--steps-per-second {speed:g}: give the positive speed you measured")
    session = open_flag_session(flags)
    config = config_from_flags(flags, session)
    state = load_state(session)
    quiet_libraries()
    with _model_configs(config) as (model_path, resolution):
        training = config.training
        family = family_of_folder(model_path)
        family.check_settings(training)  # what the family cannot train is refused before any estimate
        prior = bool(training.class_images and (config.captions.class_word or training.class_images_folder))
        text = f"text encoder for {training.text_encoder_phase} steps" \
            if training.trains_text_encoder and family.trainable_text_encoders else "text encoder frozen"
        sharded = f", sharded over {training.gpus} GPUs (--shard)" if training.shard else ""
        print(f"Session {config.session!r}: {training.method} of {config.base_model.model} "
              f"at {resolution} px, batch {training.batch_size}, {text}, "
              f"{'with' if prior else 'without'} prior preservation{sharded}. Estimating...", flush=True)
        left_out = eight_bit_problem()
        rows = plans_on_common_gpus(model_path, training, config.runtime, resolution, prior, left_out is None)
    print("\n".join(plan_table(rows, training.gpus if training.shard else 0)))
    print("\n".join(cost_lines(rows, training.gpus, training.steps, speed)))
    if left_out and not training.shard:  # --shard takes neither (config.shard_needs, plan.can_quantise_base)
        print(left_out)
    if state and state.memory_plan and state.memory_plan.budget_bytes:
        print(f"This session trains with {state.memory_plan.describe()} (chosen when it started).")
    print("GPU peak: estimated tensors at their most (with what is usable in brackets: free memory less "
          "a margin). Frozen base: what the frozen weights are held in (int8/nf4: quantised). Host "
          "needs: the process and the larger of the model before it moves to the GPU (a quantised base "
          "is quantised onto the GPU shard by shard, never held whole) and what --offload keeps on the "
          "host; a checkpoint commit adds a host copy of the state only when free RAM has room (the "
          "peak in brackets), else writes without one. Expected time: no it/s has been measured on "
          "these GPUs yet; benchmarks/gpu_check.py measures it on yours.")
    if training.shard:
        print(sharded_note(training.gpus, processes_per_machine(training, config.runtime)))
    return 0


def sharded_note(gpus: int, per_machine: int) -> str:
    return (f"--shard: the GPU peak is per GPU, what each of the {gpus} GPUs holds at its most: its 1/{gpus} "
            "of the denoiser's trained weights, their gradients and AdamW state, the blocks FSDP2 gathers "
            "whole while they compute, and whole everything else (the text encoders, the VAE, activations); "
            "while the model loads, each GPU receives its shards one block at a time. Host needs are "
            f"per machine: each of its {per_machine} processes loads the model, and commits its shards "
            "without a host copy.")


@contextlib.contextmanager
def _model_configs(config: DreamBoothConfig):
    """(diffusers folder, resolution) of the base model: a known hub repo from its published
    configs (nothing downloaded), anything else as train would fetch it."""
    import tempfile

    from dreambooth_core.model.cache import model_cache_dir
    from dreambooth_core.families import detect_family
    from dreambooth_core.families.base_model import fetch_model
    from dreambooth_core.families import HUB_REPOS, write_config_folder

    base = config.base_model
    with tempfile.TemporaryDirectory(prefix="dreambooth-plan-") as tmp:
        if base.model in HUB_REPOS:
            path = str(write_config_folder(HUB_REPOS[base.model], Path(tmp)))
        else:
            path = fetch_model(base.model, model_cache_dir(), base.revision, base.single_file_config).path
        yield path, config.training.resolution_for(detect_family(path).resolution)


def upload(flags: dict[str, Any]) -> int:
    """Checked before anything is copied: the settings, the storage, the photos folder, the server."""
    from dreambooth_core.photos.originals import require_photos
    from flows.temporary_server import configured_api_url, require_configured_server
    from flows.upload import emit_uploaded, name_triggered_run, upload_photos

    deployment = flags.pop("deployment")
    if not flags.get("photos"):
        raise ConfigError("upload needs --photos: the folder whose photos go into the session.")
    session = open_flag_session(flags)
    config = config_from_flags(flags, session)
    refuse_process_local_storage(config.inputs.storage, "upload")
    session.check_writable()
    require_photos(session, config.inputs.photos)
    api_url = configured_api_url()
    require_configured_server("the photos are then copied into the session, and no training run is "
                              "triggered")
    config, count = upload_photos(config)
    print(f"Uploaded {count} photos to session {config.session!r} ({config.inputs.storage})")
    if api_url is None:
        print("No Prefect server is set (PREFECT_API_URL), so no training run was triggered. "
              f"Train with: dreambooth train --session {config.session} --storage {config.inputs.storage}",
              file=sys.stderr)
        return 0
    emit_uploaded(config, deployment, api_url)
    print(f"Sent the upload event: deployment {deployment!r} starts training it: "
          f"{name_triggered_run(config, deployment, api_url)}")
    return 0


def automations(args: dict[str, Any]) -> int:
    from flows.temporary_server import require_configured_server

    require_configured_server(without=None)  # before Prefect is imported: it reads the URL then
    from prefect.settings import PREFECT_API_URL

    from flows.automations import DEFAULT_HEARTBEAT_TIMEOUT, apply_automations

    if not PREFECT_API_URL.value():
        raise ConfigError("automations live on a Prefect server: set PREFECT_API_URL (e.g. "
                          "http://127.0.0.1:4200/api after `prefect server start`).")
    if args["max_attempts"] < 1:
        raise ConfigError(f"--max-attempts {args['max_attempts']}: use 1 or more.")
    timeout = args["heartbeat_timeout"] or DEFAULT_HEARTBEAT_TIMEOUT
    for name, outcome in apply_automations(args["max_attempts"], timeout):
        print(f"{outcome}: {name}")
    return 0


def worker(args: dict[str, Any]) -> int:
    from flows.worker import run_worker

    if args["grace"] <= 0:
        raise ConfigError(f"--grace {args['grace']:g}: use a number of seconds above 0.")
    return run_worker(args["pool"], args["grace"])


def tokens(args: dict[str, Any]) -> int:
    from dreambooth_core.captions.analysis import analyse_token, suggest_tokens, worst
    from dreambooth_core.captions.token_report import analysis_lines, tokenizer_title
    from dreambooth_core.families import family_of
    from dreambooth_core.families.base_model import fetch_model
    from dreambooth_core.model.cache import model_cache_dir

    word = (args["word"] or "").strip()
    if not word and not args["suggest"]:
        raise ConfigError("no word to check. Pass one (dreambooth tokens shrk) or --suggest.")
    quiet_libraries()
    model = fetch_model(args["model"], model_cache_dir(), revision=args["revision"],
                        hf_token=os.environ.get("HF_TOKEN"))
    judges = family_of(model.family).token_judges(model.path)
    if word:
        analyses = [analyse_token(word, judge) for judge in judges.values()]
        for (name, judge), judged in zip(judges.items(), analyses):
            which = tokenizer_title(name, ", ") if len(judges) > 1 else "tokenizer"
            kind = f", {judge.description}" if judge.kind != "clip-bpe" else ""  # T5's, Qwen's
            print(f"{word} ({args['model']} {which}{kind})")
            print("\n".join(analysis_lines(judged, markdown=False)))
        analysis = worst(analyses)
    if args["suggest"] or (word and analysis.verdict != "good"):
        suggestions = suggest_tokens(list(judges.values()), 5, word, {word})  # good with each tokenizer
        print("Rare identifiers for this model: " + (", ".join(suggestions) or "none among the words tried"))
    return 0


def validate(args: dict[str, Any]) -> int:
    from dreambooth_core.photos.validate import ValidationSettings, report_text, summary_line, validate_folder

    resolution = args.pop("resolution")
    try:  # the settings' own rules, as train applies them
        TrainingSettings(resolution=resolution)
        CaptionSettings(class_word=args["class_word"])
    except ValidationError as exc:
        raise invalid_settings(exc) from None
    settings = ValidationSettings(
        resolution=resolution, resolution_from="--resolution" if resolution !=
        SMALLEST_RESOLUTION else "default; pass --resolution for another model",
        token=args["token"], class_word=args["class_word"],
        subject_type=args["subject_type"], allow_several_faces=args["allow_several_faces"])
    report = validate_folder(args["photos"], settings)
    print(report.model_dump_json(indent=2) if args["json"] else report_text(report), end="\n")
    if not report.usable:
        print(f"error: {summary_line(report)}; each error above says what to do.", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def status(args: dict[str, Any]) -> int:
    import dataclasses
    import json

    from dreambooth_core.reports.status import list_sessions, read_statuses, status_lines, status_table

    name = args["session"]
    storage = args["storage_block"] or args["storage"]  # as the user named it
    url, options = flag_storage(args["storage"], args["storage_block"])
    names = list_sessions(url, options)
    if name is not None and name not in names:
        known = f"Sessions there: {', '.join(names)}." if names else "There are no sessions there."
        raise SessionError(f"no session {name!r} in storage {storage!r}. {known} Pass the "
                           "--storage the session was trained with, or another session name.")
    statuses = read_statuses(url, [name] if name else names, options)
    if name and statuses[0].problem:
        raise SessionError(f"session {name!r} cannot be read: {statuses[0].problem}")
    if args["json"]:
        print(json.dumps([dataclasses.asdict(s) for s in statuses], indent=2))
    elif name:
        print("\n".join(status_lines(statuses[0])))
    elif statuses:
        print("\n".join(status_table(statuses)))
    else:
        print(f"No sessions in {storage}. Start one: dreambooth train --session NAME --photos DIR")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    try:
        handlers = {"train": train, "plan": plan, "tokens": tokens, "validate": validate, "upload": upload,
                    "automations": automations, "worker": worker, "status": status, **SESSION_COMMANDS}
        return handlers[command](args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("Interrupted. Run the same command again to continue from the last committed "
              "checkpoint.", file=sys.stderr)
        return EXIT_INTERRUPTED


def run() -> None:
    """The `dreambooth` command as a process: main(), then an exit that skips tearing down the
    imported libraries (torch, transformers, Prefect: about 2 s) once every exit handler has run."""
    atexit.register(_end_process)  # registered before the libraries' own: runs after them
    try:
        code = main()
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    _ending["code"] = code
    if _ending["skip_prefect_queues"]:
        _end_process()  # now: Prefect's log and event queues would wait for the lost API at exit
    sys.exit(code)


_ending: dict[str, Any] = {"code": 1,  # stays 1 when main() ends in an exception
                           "skip_prefect_queues": False}


def _end_process() -> None:
    code = _ending["code"]
    logging.shutdown()  # registered before this, so it would run after it
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


if __name__ == "__main__":
    run()
