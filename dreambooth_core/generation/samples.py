"""Sample images during training: a few prompts, a fixed seed, one grid per checkpoint.

The grid has one row per prompt and one column per image; column j of every row
starts from the same noise (drawn from (seed, j)), so rows differ only by prompt
and the grids of successive checkpoints differ only by the weights. Written to
the session as samples/step-NNNNNN.png, each image also as
samples/step-NNNNNN/<row>-<column>.png, and samples/step-NNNNNN.json (the prompts).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict

from dreambooth_core.config import SampleSettings
from dreambooth_core.families import ModelParts
from dreambooth_core.generation.pipeline import DEFAULT_GUIDANCE, build_pipeline, render
from dreambooth_core.photos.crop import encode_png
from dreambooth_core.session.dataset_manifest import SubjectRecord
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import samples_folder, samples_grid, samples_settings
from dreambooth_core.session.storage import SessionRef
from dreambooth_core.training.plan import Chunk
from dreambooth_core.training.data.randomness import generator_for
from dreambooth_core.training.trainer import Trainer

SEED_STREAM = "samples"
DEFAULT_SAMPLE_STEPS = 20
DEFAULT_IMAGES_PER_PROMPT = 2


class Samples(BaseModel):
    """Where one checkpoint's samples are, relative to the session."""

    model_config = ConfigDict(frozen=True)
    step: int
    grid: str
    images: list[list[str]]  # [prompt][image]
    prompts: list[str]


def sample_prompts(subjects: dict[str, SubjectRecord], extra: list[str] = ()) -> list[str]:
    """Each subject's caption ('photo of <token> <class>', as the dataset manifest records it), then
    the user's own prompts. A user prompt holding {token} (and {class}) is rendered once per subject."""
    prompts = [r.instance_prompt or f"photo of {t} {r.class_word or ''}".strip()
               for t, r in sorted(subjects.items())]
    for prompt in extra:
        prompts += fill_subjects(prompt, subjects)
    return list(dict.fromkeys(prompts))


def fill_subjects(prompt: str, subjects: dict[str, SubjectRecord]) -> list[str]:
    """A prompt holding {token} (and {class}) once per subject, filled in; any other as it is.
    A subject without a class word leaves no gap: 'a {token} {class} dog' -> 'a shrk dog'."""
    if "{token}" not in prompt:
        return [prompt]
    return [" ".join(prompt.replace("{token}", t).replace("{class}", r.class_word or "").split())
            for t, r in sorted(subjects.items())]


class SampleSpec(BaseModel):
    """Everything besides the weights that decides the samples."""

    model_config = ConfigDict(frozen=True)
    prompts: list[str]
    resolution: int
    seed: int = 0
    images_per_prompt: int = DEFAULT_IMAGES_PER_PROMPT
    steps: int = DEFAULT_SAMPLE_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE


def render_samples(session: Session, step: int, model_path: str, settings: SampleSpec,
                   device: torch.device | str, trained: ModelParts | None = None,
                   log: logging.Logger | None = None) -> Samples:
    """Render every prompt with the trained parts (the base model's without) and save the grid and images."""
    log = log or logging.getLogger("dreambooth")
    pipeline = build_pipeline(model_path, device, trained)
    rows = [render(pipeline, prompt, _column_noise(settings), settings.resolution, settings.steps,
                   settings.guidance_scale) for prompt in settings.prompts]
    folder = samples_folder(step)
    names = [[f"{folder}/{r:02d}-{c:02d}.png" for c in range(len(row))] for r, row in enumerate(rows)]
    for row, row_names in zip(rows, names):
        for image, name in zip(row, row_names):
            session.write_bytes(name, encode_png(image))
    session.write_json(samples_settings(step), {"step": step, **settings.model_dump()})
    session.write_bytes(samples_grid(step), grid_png(rows))  # last: the grid means "all saved"
    log.info("Samples at step %d: %d prompts x %d images in %s", step, len(settings.prompts),
             settings.images_per_prompt, session.path(samples_grid(step)))
    return Samples(step=step, grid=samples_grid(step), images=names, prompts=settings.prompts)


def _column_noise(settings: SampleSpec) -> list[torch.Generator]:
    """Column j starts from the same noise in every row and at every step."""
    return [generator_for(settings.seed, j, SEED_STREAM) for j in range(settings.images_per_prompt)]


def grid_png(rows: list[list[Image.Image]]) -> bytes:
    """The images side by side, one row per prompt, as PNG."""
    side = rows[0][0].width
    sheet = Image.new("RGB", (side * max(map(len, rows)), side * len(rows)), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            sheet.paste(image.convert("RGB"), (c * side, r * side))
    out = io.BytesIO()
    sheet.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def saved_samples(session: Session, step: int, settings: SampleSpec) -> Samples | None:
    """The samples already saved at `step` with these settings (the grid is written last)."""
    folder = samples_folder(step)
    if (not session.exists(samples_grid(step))
            or session.read_json(samples_settings(step)) != {"step": step, **settings.model_dump()}):
        return None
    images = [[f"{folder}/{r:02d}-{c:02d}.png" for c in range(settings.images_per_prompt)]
              for r in range(len(settings.prompts))]
    return Samples(step=step, grid=samples_grid(step), images=images, prompts=settings.prompts)


def sample_spec(settings: SampleSettings, subjects: dict[str, SubjectRecord], resolution: int,
                seed: int, guidance_scale: float) -> SampleSpec | None:
    """What to render after a chunk, or None when samples are off."""
    if not settings.sample_every:
        return None
    return SampleSpec(prompts=sample_prompts(subjects, settings.own_prompts), resolution=resolution,
                      seed=seed, steps=settings.sample_steps, guidance_scale=guidance_scale)


def samples_due(every: int, chunk: Chunk) -> bool:
    """After every `every` chunks, and after the last one."""
    return bool(every) and (chunk.index % every == 0 or chunk.index == chunk.count)


@dataclass(frozen=True)
class SampleHook:
    """Renders a chunk's samples with the trainer's own modules (rank 0, after the chunk)."""

    session: SessionRef
    model_path: str
    spec: SampleSpec
    every: int

    def __call__(self, trainer: Trainer, chunk: Chunk, log: logging.Logger) -> None:
        if not samples_due(self.every, chunk):
            return
        with trainer.text_encoders_for_rendering():
            render_samples(self.session.open(), chunk.end, self.model_path, self.spec, trainer.device,
                           trainer.parts, log)


def samples_markdown(session: Session, samples: Samples) -> str:
    """A table of what was rendered and where the files are."""
    lines = [f"# Samples at step {samples.step}", "", f"Grid: `{session.url}/{samples.grid}` "
             f"({len(samples.prompts)} rows: one per prompt; {len(samples.images[0])} columns)", "",
             "| row | prompt | images |", "|---|---|---|"]
    for row, (prompt, images) in enumerate(zip(samples.prompts, samples.images)):
        files = ", ".join(f"`{name}`" for name in images)
        lines.append(f"| {row + 1} | {prompt.replace('|', '/')} | {files} |")
    return "\n".join(lines) + "\n"
