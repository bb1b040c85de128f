"""How long rendering takes without a GPU, to warn before it starts.

Measured with `benchmarks/render_speed.py --model sd15 --device cpu` on the development VM
(2 cores, torch 2.13 CPU build; BENCHMARKS.md): each denoising step of a 512 px image
(with classifier-free guidance, two UNet passes) takes 13.8 s, and the prompt's encoding
and the VAE decode 15 s more. Larger images cost about in proportion to their pixels.
"""

from __future__ import annotations

from dreambooth_core.reports.timing import duration_text

CPU_SECONDS_PER_STEP_512 = 13.8
CPU_SECONDS_PER_IMAGE_512 = 15.0
MEASURED_ON = "a 2-core CPU"


def cpu_render_seconds(images: int, inference_steps: int, resolution: int) -> float:
    """Seconds to render `images` images of a full-size SD 1.x/2.x model on the CPU, about."""
    scale = (resolution / 512) ** 2
    return images * (inference_steps * CPU_SECONDS_PER_STEP_512 + CPU_SECONDS_PER_IMAGE_512) * scale


def cpu_render_warning(model: str, images: int, inference_steps: int, resolution: int) -> str | None:
    """The warning for rendering on the CPU; None for the built-in tiny models (seconds)."""
    if model.startswith("tiny"):
        return None
    seconds = cpu_render_seconds(images, inference_steps, resolution)
    return (f"no CUDA GPU: rendering {images} image(s) of {inference_steps} steps at {resolution} px with "
            f"{model} on the CPU takes about {duration_text(seconds)} (measured on {MEASURED_ON}: "
            f"{CPU_SECONDS_PER_STEP_512:.1f} s per step at 512 px; benchmarks/render_speed.py). "
            "A GPU renders each image in seconds; fewer images or --inference-steps shorten it.")

