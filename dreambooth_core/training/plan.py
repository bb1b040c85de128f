"""The training plan: the fingerprint recorded and checked (made by config.fingerprint_values),
chunks, and where to resume."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from dreambooth_core.captions.captioning import Captions
from dreambooth_core.config import (
    BaseModelSettings,
    DreamBoothConfig,
    MemoryPlan,
    RuntimeSettings,
    TrainingSettings,
    differing_fields,
    fingerprint_values,
    optimizer_device_problem,
    parse_class_words,
    too_many_chunks,
)
from dreambooth_core.errors import ConfigError
from dreambooth_core.hashing import digest
from dreambooth_core.families import ModelFamily, family_of
from dreambooth_core.families.base_model import LocalModel
from dreambooth_core.families.quantised import check_base_precision
from dreambooth_core.photos.prepare import PreparedDataset
from dreambooth_core.session.class_images import ClassImages
from dreambooth_core.session.folder import Session
from dreambooth_core.session.state import Committed, committed_state, load_state, update_state
from dreambooth_core.session.storage import SessionRef
from dreambooth_core.training.devices import (
    check_device_settings,
    check_processes,
    resolve_device,
    resolve_precision,
)
from dreambooth_core.training.data.masks import load_mask_manifest
from dreambooth_core.training.memory.plan import detect_gpu, settle_memory_plan
from dreambooth_core.training.memory.offload import check_trainer_offload


class Chunk(BaseModel):
    """Steps [start, end) of training, committed as one checkpoint at `end`."""

    model_config = ConfigDict(frozen=True)
    index: int
    count: int
    start: int
    end: int


def plan_chunks(total: int, chunk_steps: int) -> list[Chunk]:
    """Chunks end on multiples of chunk_steps, so extending a run keeps earlier ones."""
    if problem := too_many_chunks(total, chunk_steps):  # a total from the photo count, not --steps
        raise ConfigError(f"{problem}.")
    ends = list(range(chunk_steps, total, chunk_steps)) + [total]
    starts = [0] + ends[:-1]
    return [Chunk(index=i + 1, count=len(ends), start=s, end=e)
            for i, (s, e) in enumerate(zip(starts, ends))]


class TrainingPlan(BaseModel):
    """Everything a chunk needs, small enough to be a task parameter."""

    model_config = ConfigDict(frozen=True)
    session: SessionRef
    model_path: str
    family: ModelFamily
    fingerprint: str
    total_steps: int
    chunks: list[Chunk]
    done: Committed  # what the session held when this plan was made: the one account of what is done
    resolution: int
    subjects: list[str]  # the tokens
    initializer_word: str  # textual inversion: where the new embeddings start
    training: TrainingSettings
    runtime: RuntimeSettings
    class_images: ClassImages | None = None
    memory_plan: MemoryPlan | None = None  # what --memory auto chose (training and runtime include it)
    # What another machine fetches the base model from, and the digest its copy must have.
    base_model: BaseModelSettings | None = None
    model_digest: str | None = None

    @property
    def boundaries(self) -> list[int]:
        return [chunk.end for chunk in self.chunks]

    @property
    def resume_step(self) -> int:
        """The last committed step: where training goes on."""
        return self.done.latest_step


def initializer_word(config: DreamBoothConfig) -> str:
    """--initializer-word, else the class word all subjects share, else 'person'."""
    words = parse_class_words(config.captions.class_word)
    same_word = words.get(None) if len(words) == 1 else None
    return config.training.initializer_word or same_word or "person"


def check_settings(training: TrainingSettings, runtime: RuntimeSettings) -> None:
    """What this machine's device cannot train with these settings, refused before any model loads."""
    device = resolve_device(runtime.device)
    check_processes(training.gpus // runtime.nnodes, device)
    check_device_settings(training.mixed_precision, training.base_precision, runtime.offload, training.gpus,
                          device)
    if problem := optimizer_device_problem(training.optimizer, device.type):
        raise ConfigError(f"{problem}.")
    check_base_precision(training.base_precision, training.method, str(device),
                         resolve_precision(training.mixed_precision, device))


def make_plan(session: Session, ref: SessionRef, config: DreamBoothConfig, model: LocalModel,
              dataset: PreparedDataset, captions: Captions,
              class_images: ClassImages | None = None) -> TrainingPlan:
    """Record the fingerprint on first use; refuse a session trained with another."""
    total = config.training.total_steps(dataset.count)
    state = load_state(session)
    family_of(model.family).check_settings(config.training)  # before estimating what it cannot train
    check_settings(config.training, config.runtime)
    memory = settle_memory_plan(config, state.memory_plan, state.training_started, model.path,
                                dataset.resolution, class_images is not None, detect_gpu(config))
    training, runtime = (memory.apply(config.training, config.runtime) if memory
                         else (config.training, config.runtime))
    check_settings(training, runtime)  # a recorded plan this device cannot train with (nf4 on the CPU)
    check_trainer_offload(training, runtime)
    config = config.model_copy(update={"training": training, "runtime": runtime})
    precision = resolve_precision(config.training.mixed_precision, resolve_device(config.runtime.device))
    values = fingerprint_values(config, total, precision, model.digest, captions.digest,
                                class_images and class_images.digest,
                                load_mask_manifest(session).digest if config.training.masked_loss else None)
    recorded = state.fingerprint
    if recorded is not None and recorded != values:
        raise ConfigError(
            f"session {session.name!r} was trained on different inputs: "
            f"{', '.join(differing_fields(recorded, values))} changed. Restore them (for a hub "
            "model, pin --revision) or start a new --session.")
    done = committed_state(session, state, digest(values))
    resume = done.latest_step
    if resume > total:
        raise ConfigError(f"--steps {total} is below the {resume} steps session {session.name!r} "
                          f"has already trained. Pass --steps {resume} or more.")
    update_state(session, fingerprint=values, total_steps=total, memory_plan=memory or state.memory_plan)
    return TrainingPlan(
        session=ref, model_path=model.path, family=model.family, fingerprint=digest(values),
        total_steps=total, chunks=plan_chunks(total, config.runtime.chunk_steps), done=done,
        resolution=dataset.resolution, subjects=captions.tokens, initializer_word=initializer_word(config),
        training=config.training, runtime=config.runtime, class_images=class_images, memory_plan=memory,
        base_model=config.base_model, model_digest=model.digest)
