"""Trying a trained model: the user's prompts rendered with a session's model at one step.

    generations/<YYYYMMDD-HHMMSS>-step-NNNNNN/   NN-MM.png (prompt NN, image MM), grid.png,
                                                 generation.json (prompts, step, settings)

Image m of every prompt starts from the noise drawn from (seed, m), so one seed gives
comparable images across prompts and steps. A prompt holding {token} (and {class}) is
rendered once per subject. The folder is assembled locally and placed in the session whole.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from dreambooth_core.families import family_of
from dreambooth_core.captions.tokenizer import TextTokenizer
from dreambooth_core.config import GenerationSettings
from dreambooth_core.errors import ConfigError, SessionError
from dreambooth_core.evaluation.session_evaluation import step_pipeline
from dreambooth_core.export.step_export import replace_folder
from dreambooth_core.export.step_export import Source, TrainedSession, exportable_steps, require_step
from dreambooth_core.generation.pipeline import render
from dreambooth_core.generation.samples import fill_subjects, grid_png
from dreambooth_core.photos.crop import encode_png
from dreambooth_core.session.dataset_manifest import require_dataset_manifest
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import GENERATIONS, step_name
from dreambooth_core.session.scratch import scratch_folder
from dreambooth_core.training.data.randomness import generator_for

SEED_STREAM = "generate"
SETTINGS_FILE = "generation.json"
GRID_FILE = "grid.png"


class GeneratedPrompt(BaseModel):
    model_config = ConfigDict(frozen=True)
    prompt: str
    images: list[str]  # session-relative


class Generation(BaseModel):
    """What one `generate` made, and where it is in the session."""

    model_config = ConfigDict(frozen=True)
    folder: str  # session-relative
    grid: str
    step: int
    source: Source
    width: int
    height: int
    settings: GenerationSettings
    prompts: list[GeneratedPrompt]


def expanded_prompts(session: Session, prompts: list[str]) -> list[str]:
    """The prompts with {token} and {class} filled in per subject, each once."""
    subjects = require_dataset_manifest(session).subjects
    filled = [p for prompt in prompts if prompt.strip() for p in fill_subjects(prompt.strip(), subjects)]
    if not filled:
        raise ConfigError("no prompt to render: give at least one, e.g. \"a photo of {token} "
                          "{class} on the beach\" ({token} and {class} are filled in per subject).")
    return list(dict.fromkeys(filled))


def require_prompt_lengths(prompts: list[str], tokenizer: TextTokenizer, new_tokens: list[str] = ()) -> None:
    """Every prompt fits the text encoder's context (77 tokens with its start and end markers);
    `new_tokens`: identifiers the trained tokenizer holds as one token (textual inversion)."""
    if new_tokens:
        tokenizer.tokenizer.add_tokens([t for t in new_tokens if t not in tokenizer.tokenizer.get_vocab()])
    limit = tokenizer.context_length
    long = [(prompt, tokenizer.length(prompt)) for prompt in prompts]
    long = [(prompt, length) for prompt, length in long if length > limit]
    if long:
        listed = "; ".join(f"{prompt[:60]!r}{'...' if len(prompt) > 60 else ''} takes {length}"
                           for prompt, length in long)
        raise ConfigError(f"{len(long)} prompt(s) are longer than the text encoder reads ({limit} tokens "
                          f"with its start and end markers): {listed}. The model would ignore the words "
                          "past the limit; shorten them.")


def chosen_step(session: Session, step: int | None) -> tuple[int, Source]:
    """`step` and where its weights are; None: the newest step there is (the finished model once
    training is done)."""
    if step is not None:
        return step, require_step(session, step)
    steps = exportable_steps(session)
    if not steps:
        raise SessionError(f"session {session.name!r} has no committed checkpoint or snapshot yet: "
                           "train it until its first chunk ends (dreambooth train), then try it.")
    newest = max(steps)
    return newest, steps[newest]


def checked_request(session: Session, trained: TrainedSession, prompts: list[str],
                    step: int | None) -> tuple[list[str], int, Source]:
    """(the prompts filled in per subject, the step, where its weights are), or the error
    naming what is wrong; nothing heavy is loaded."""
    chosen, source = chosen_step(session, step)
    filled = expanded_prompts(session, prompts)
    learnt = trained.subjects if trained.training.method == "textual-inversion" else []
    judges = family_of(trained.family).token_judges(trained.model_path)
    require_prompt_lengths(filled, next(iter(judges.values())), learnt)
    return filled, chosen, source


def generate(session: Session, trained: TrainedSession, prompts: list[str], step: int, source: Source,
             settings: GenerationSettings, device: torch.device,
             log: logging.Logger = logging.getLogger("dreambooth")) -> Generation:
    """Render `prompts` (already expanded) with the model at `step` into a new generations/ folder."""
    resolution = require_dataset_manifest(session).resolution
    width, height = settings.width or resolution, settings.height or resolution
    folder = _new_folder(session, step)
    log.info("Rendering %d prompt(s) x %d image(s) at %dx%d with step %d (from its %s)", len(prompts),
             settings.count, width, height, step, source)
    guidance = settings.guidance_scale if settings.guidance_scale is not None else \
        family_of(trained.family).default_guidance
    with scratch_folder(session, "generate") as local:
        out = local / "generation"
        out.mkdir()
        pipeline = step_pipeline(session, trained, step, source, local, device)
        rows, made = [], []
        for row, prompt in enumerate(prompts):
            generators = [generator_for(settings.seed, m, SEED_STREAM) for m in range(settings.count)]
            images = render(pipeline, prompt, generators, resolution, settings.inference_steps,
                            guidance, settings.negative_prompt, (width, height))
            names = [f"{row:02d}-{m:02d}.png" for m in range(len(images))]
            for image, name in zip(images, names):
                (out / name).write_bytes(encode_png(image))
            rows.append(images)
            made.append(GeneratedPrompt(prompt=prompt, images=[f"{folder}/{name}" for name in names]))
        (out / GRID_FILE).write_bytes(grid_png(rows))
        result = Generation(folder=folder, grid=f"{folder}/{GRID_FILE}", step=step, source=source,
                            width=width, height=height, settings=settings, prompts=made)
        (out / SETTINGS_FILE).write_text(result.model_dump_json(indent=2))
        replace_folder(session, out, folder)
    log.info("Wrote %d image(s) to %s/%s/", sum(len(p.images) for p in made), session.url, folder)
    return result


def _new_folder(session: Session, step: int) -> str:
    """generations/<UTC time>-step-NNNNNN, with a suffix if one of that second is there."""
    base = f"{GENERATIONS}/{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{step_name(step)}"
    folder, n = base, 1
    while session.exists(folder):
        n += 1
        folder = f"{base}-{n}"
    return folder


def generation_markdown(session: Session, generation: Generation) -> str:
    """What was rendered and where the files are, for the Prefect UI."""
    s = generation.settings
    lines = [f"# Images of session {session.name} at step {generation.step}", "",
             f"From its {generation.source}; {generation.width}x{generation.height}, seed {s.seed}, "
             f"{s.inference_steps} steps, guidance {s.guidance_scale}"
             + (f", negative prompt {s.negative_prompt!r}" if s.negative_prompt else "") + ".", "",
             f"Folder: `{session.url}/{generation.folder}/` (grid: one row per prompt)", "",
             "| row | prompt | images |", "|---|---|---|"]
    for row, prompt in enumerate(generation.prompts):
        files = ", ".join(f"`{Path(name).name}`" for name in prompt.images)
        lines.append(f"| {row + 1} | {prompt.prompt.replace('|', '/')} | {files} |")
    return "\n".join(lines) + "\n"
