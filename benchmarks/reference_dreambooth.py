"""diffusers' examples/dreambooth/train_dreambooth.py run on our benchmark's model, for a
side-by-side speed figure. The script is read from a local diffusers checkout, never copied
here; it needs diffusers, transformers, accelerate and torchvision in the Python that runs it.

Its speed is read from its own progress bar (tqdm's rate at the end: smoothed over the last
steps, so model loading and the final save are not in it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO / "examples" / "photos"
# "Steps: 100%|##########| 22/22 [00:08<00:00,  2.71it/s, loss=0.1, lr=5e-06]" (or "1.52s/it")
RATE = re.compile(r"(\d+(?:\.\d+)?)(it/s|s/it)")


@dataclass(frozen=True)
class ReferenceRun:
    it_per_s: float
    seconds: float  # the whole process: loading, training, saving
    command: list[str]


def save_model_folder(parts, folder: Path) -> Path:
    """A diffusers folder of `parts` (a ModelParts), as train_dreambooth.py loads one."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("unet", "vae", "text_encoder"):
        getattr(parts, name).save_pretrained(folder / name)
    parts.tokenizer.save_pretrained(folder / "tokenizer")
    parts.noise_scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


def class_folder(folder: Path, count: int) -> Path:
    """`count` class images (the example photos, repeated), so the script generates none."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = sorted(PHOTOS.iterdir())
    for index in range(count):
        source = photos[index % len(photos)]
        shutil.copy(source, folder / f"{index:03d}{source.suffix}")
    return folder


def reference_command(python: str, script: Path, model: Path, work: Path, resolution: int, steps: int,
                      prior: bool, precision: str) -> list[str]:
    """The run our 'prior' (or 'defaults') row matches: batch 1, the text encoder trained, no checkpoint."""
    command = [python, str(script), "--pretrained_model_name_or_path", str(model),
               "--instance_data_dir", str(PHOTOS), "--instance_prompt", "photo of shrk person",
               "--output_dir", str(work / "reference-output"), "--resolution", str(resolution),
               "--train_batch_size", "1", "--max_train_steps", str(steps), "--checkpointing_steps", str(10 * steps),
               "--seed", "0", "--train_text_encoder", "--mixed_precision", precision]
    if prior:
        command += ["--with_prior_preservation", "--class_data_dir", str(class_folder(work / "class", 4)),
                    "--class_prompt", "photo of person", "--num_class_images", "4"]
    return command


def run_reference(command: list[str], timeout: float) -> ReferenceRun:
    import time

    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"the reference failed ({done.returncode}): {done.stderr[-1500:]}")
    return ReferenceRun(reference_rate(done.stdout + done.stderr), seconds, command)


def reference_rate(output: str) -> float:
    """Steps per second from the last rate of the script's "Steps" progress bar (other bars, such
    as loading the pipeline it saves at the end, are not training)."""
    updates = [part for part in re.split(r"[\r\n]", output) if part.startswith("Steps:")]
    rates = [rate for part in updates for rate in RATE.findall(part)]
    if not rates:
        raise RuntimeError("the reference printed no rate on its Steps progress bar (it/s or s/it)")
    value, unit = rates[-1]
    return float(value) if unit == "it/s" else 1.0 / float(value)
