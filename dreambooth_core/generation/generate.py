"""Generating one class prompt's images into the store, resumably.

Image i starts from noise drawn with its own generator, seeded from (seed, i), so
any count reuses the first images of a larger or smaller one. Images are written
one by one, atomically, as soon as their batch is rendered: a run killed after
150 of 200 keeps the 150 and the next run renders only the missing ones. Batches
are aligned (batch k always holds images kB .. kB+B-1), so a resumed run renders
each image in the same batch an uninterrupted run would have, with the same result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dreambooth_core.generation.class_store import SEED_STREAM, generated_key, image_name
from dreambooth_core.families import family_of_folder
from dreambooth_core.generation.pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS, build_pipeline, render
from dreambooth_core.photos.crop import encode_png
from dreambooth_core.reports.timing import estimate_text
from dreambooth_core.session.folder import Session
from dreambooth_core.training.data.randomness import generator_for

DEFAULT_BATCH = 4
KEY_FILE = "key.json"


@dataclass(frozen=True)
class GenerationRequest:
    """Everything that decides the images of one class prompt (plus how fast to make them)."""

    model_path: str
    model_digest: str
    prompt: str
    resolution: int
    seed: int = 0
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    batch_size: int = DEFAULT_BATCH
    size: tuple[int, int] | None = None  # (width, height) of an aspect-ratio bucket; None: a square

    @property
    def key(self) -> str:
        shape = self.resolution if self.size is None else list(self.size)
        return generated_key(self.model_digest, self.prompt, self.seed, shape, self.steps,
                             self.guidance_scale, self.scheduler)

    @property
    def scheduler(self) -> str:
        return family_of_folder(self.model_path).render_scheduler


def generate_images(store: Session, request: GenerationRequest, count: int, device: torch.device,
                    log: logging.Logger, on_image: Callable[[int], None] | None = None,
                    pipeline_for: Callable[[], object] | None = None) -> tuple[list[str], int]:
    """Make sure images 0..count-1 of `request` exist; returns (their paths in the store, number made).

    `on_image(i)` is called after image i is written; `pipeline_for()` gives the pipeline to render with
    (default: one built for this call), so that the requests of several buckets share one."""
    key = request.key
    store.remove_temporary(key)
    present = set(store.list(key))
    files = [f"{key}/{image_name(i)}" for i in range(count)]
    missing = [i for i in range(count) if image_name(i) not in present]
    if not missing:
        return files, 0
    if KEY_FILE not in present:
        store.write_json(f"{key}/{KEY_FILE}", _description(request))
    log.info("Generating %d class images for %r (%d already in %s)", len(missing), request.prompt,
             count - len(missing), store.path(key))
    pipeline = pipeline_for() if pipeline_for else build_pipeline(request.model_path, device)
    batches = sorted({i - i % request.batch_size for i in missing})
    made, began = 0, time.perf_counter()
    for start in batches:
        indices = range(start, start + request.batch_size)
        generators = [generator_for(request.seed, i, SEED_STREAM) for i in indices]
        images = render(pipeline, request.prompt, generators, request.resolution, request.steps,
                        request.guidance_scale, size=request.size)
        for index, image in zip(indices, images):
            if image_name(index) in present:
                continue
            # images past `count` in the last batch are kept too: a larger count reuses them
            store.write_bytes(f"{key}/{image_name(index)}", encode_png(image))
            present.add(image_name(index))
            made += 1
            if on_image:
                on_image(index)
        done = sum(image_name(i) in present for i in range(count))
        rate = made / (time.perf_counter() - began)
        log.info("Class images for %r: %d/%d (%.2f images/s%s)", request.prompt, done, count, rate,
                 f", about {estimate_text((count - done) / rate)} left" if done < count and rate else "")
    return files, made


def _description(request: GenerationRequest) -> dict:
    """What made the images, for people browsing the store."""
    return {"prompt": request.prompt, "model_digest": request.model_digest, "seed": request.seed,
            "resolution": request.resolution, **({"size": list(request.size)} if request.size else {}),
            "steps": request.steps,
            "guidance_scale": request.guidance_scale, "scheduler": request.scheduler,
            "image_seed": f"generator_for(seed, index, {SEED_STREAM!r})"}
