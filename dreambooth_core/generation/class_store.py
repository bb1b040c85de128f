"""Names inside the class-image store beside the sessions (session/class_images.py: why one store
serves every session): each prompt's folder, named after all that decides its images, and the
images in it.
"""

from __future__ import annotations

import re

from dreambooth_core.hashing import digest

# Bump when the same key would give different images (a change in how they are made).
GENERATION_VERSION = 1
SEED_STREAM = "class-images"


def generated_key(model_digest: str, prompt: str, seed: int, resolution: int | list[int], steps: int,
                  guidance_scale: float, scheduler: str) -> str:
    """Folder name for the images of one prompt: readable prefix, digest of all that decides them.

    The count is not part of it: image i is the same whatever the count, so a larger
    count adds images to the same folder."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "prompt"
    return f"{slug}-" + digest([GENERATION_VERSION, model_digest, prompt, seed, resolution, steps,
                                guidance_scale, scheduler])


def image_name(index: int) -> str:
    return f"{index:06d}.png"


def prepared_name(source_sha256: str, resolution: int | list[int], method: str) -> str:
    """A user's class image, cropped and resized: named after everything that made it."""
    return f"own/{digest([source_sha256, resolution, method])[:20]}.png"
