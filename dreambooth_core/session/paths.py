"""Every relative path of a session folder, and the shared folders beside the sessions.

    <storage>/<session>/
      session.json                  SESSION_FILE: settings, fingerprint, status (state.py)
      lease.json                    LEASE_FILE: the run that writes the session (lease.py)
      photos/                       PHOTOS: the originals, byte for byte
      dataset/  manifest.json       DATASET, DATASET_MANIFEST: prepared images (dataset_manifest.py),
                                    each with its editable caption (.txt) under --captions auto
      masks/  manifest.json         MASKS, MASK_MANIFEST: subject masks of the prepared images (--masked-loss)
      caption_cache/<key>.txt       CAPTION_CACHE: what the captioner said of each prepared image
      reports/                      dataset and token checks, contact sheet, loss, timing
      class_images/manifest.json    CLASS_MANIFEST: the class images training uses
      text_embeddings/<key>.safetensors  text_embedding_file(): frozen captions' conditioning
      checkpoints/step-NNNNNN/      checkpoint_folder(): training state + CHECKPOINT_MANIFEST
      snapshots/step-NNNNNN/        snapshot_folder(): small model files every N steps
      exports/step-NNNNNN/          export_folder(): a step's files, exported on request
      published.json                PUBLISHED: the hub repos the session was published to
      samples/step-NNNNNN.png       samples_grid(): sample images of a checkpoint
      <session>.safetensors ...     the outputs; DIFFUSERS: the diffusers folder
    <storage>/class-images/         CLASS_STORE: class images shared by every session there
    <storage>/.prefect-results/     RESULTS_STORE: Prefect's task results (shared storage only)
"""

import re

# CLASS_STORE, RESULTS_STORE: beside the sessions, not inside one; named in config.py, whose
# session-name rule keeps their names free.
from dreambooth_core.config import CLASS_STORE, RESULTS_STORE, SHARED_FOLDERS  # noqa: F401

SESSION_FILE = "session.json"
LEASE_FILE = "lease.json"
PHOTOS = "photos"
DATASET = "dataset"
DATASET_MANIFEST = f"{DATASET}/manifest.json"
MASKS = "masks"
MASK_MANIFEST = f"{MASKS}/manifest.json"
REPORTS = "reports"
DATASET_REPORT_JSON = f"{REPORTS}/dataset.json"
DATASET_REPORT_MARKDOWN = f"{REPORTS}/dataset.md"
TOKEN_REPORT_JSON = f"{REPORTS}/tokens.json"
TOKEN_REPORT_MARKDOWN = f"{REPORTS}/tokens.md"
CONTACT_SHEET = f"{REPORTS}/contact_sheet.png"
LOSS_CSV = f"{REPORTS}/loss.csv"
LOSS_PNG = f"{REPORTS}/loss.png"
TIMING_JSON = f"{REPORTS}/timing.json"
CAPTIONS_REPORT = f"{REPORTS}/captions.md"
CAPTION_CACHE = "caption_cache"
EVALUATION_CSV = f"{REPORTS}/evaluation.csv"
EVALUATION_PNG = f"{REPORTS}/evaluation.png"
CLASS_MANIFEST = "class_images/manifest.json"
TEXT_EMBEDDINGS = "text_embeddings"
CHECKPOINTS = "checkpoints"
CHECKPOINT_MANIFEST = "MANIFEST.json"  # inside each checkpoint folder, written last: the commit
SHARDED_STATE = "state"  # inside a checkpoint of a --shard run: torch.distributed.checkpoint's files
SNAPSHOTS = "snapshots"
EXPORTS = "exports"
PUBLISHED = "published.json"
GENERATIONS = "generations"
SAMPLES = "samples"
DIFFUSERS = "diffusers"


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def steps_named(names: list[str]) -> list[int]:
    """The steps of the step-NNNNNN names among `names`, in order."""
    return sorted(int(name[5:]) for name in names if re.fullmatch(r"step-\d{6,}", name))


def text_embedding_file(key: str) -> str:
    """One caption's conditioning by the frozen text encoders (training/data/text_embeddings.py)."""
    return f"{TEXT_EMBEDDINGS}/{key}.safetensors"


def checkpoint_folder(step: int) -> str:
    return f"{CHECKPOINTS}/{step_name(step)}"


def snapshot_folder(step: int) -> str:
    return f"{SNAPSHOTS}/{step_name(step)}"


def export_folder(step: int) -> str:
    return f"{EXPORTS}/{step_name(step)}"


def samples_grid(step: int) -> str:
    """The grid is written last; the images are in samples_folder(step), the settings beside it."""
    return f"{SAMPLES}/{step_name(step)}.png"


def samples_folder(step: int) -> str:
    return f"{SAMPLES}/{step_name(step)}"


def samples_settings(step: int) -> str:
    return f"{SAMPLES}/{step_name(step)}.json"
