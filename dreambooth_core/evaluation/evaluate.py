"""Evaluating a model: render the paper's prompts for each subject with fixed seeds, then
measure subject fidelity against the subject's prepared photos and prompt fidelity
against each prompt without its identifier.

Image i of prompt j of a subject starts from noise drawn from (seed, j * images + i), so
every step (and the base model, step 0) is judged on the same noise.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from dreambooth_core.evaluation.face_identity import face_identity
from dreambooth_core.evaluation.judges import Judges
from dreambooth_core.evaluation.metrics import prompt_fidelity, subject_fidelity
from dreambooth_core.evaluation.prompts import evaluation_prompts
from dreambooth_core.evaluation.report import MetricRow
from dreambooth_core.generation.pipeline import render
from dreambooth_core.training.data.randomness import generator_for

SEED_STREAM = "evaluation"


@dataclass(frozen=True)
class EvaluationSpec:
    resolution: int
    seed: int = 0
    prompts: int = 4  # per subject, spread over the paper's 25
    images_per_prompt: int = 2
    inference_steps: int = 20
    guidance_scale: float = 7.5


@dataclass(frozen=True)
class Subject:
    token: str
    class_word: str
    live: bool
    photos: list[Image.Image]  # the prepared training images
    person: bool = False  # measured for face identity too


def evaluate_pipeline(pipeline, judges: Judges, subjects: list[Subject], spec: EvaluationSpec,
                      step: int) -> list[MetricRow]:
    """The three metrics of every subject for the model in `pipeline`, as rows for `step`."""
    rows = []
    for subject in subjects:
        generated, judged = render_subject(pipeline, subject, spec)
        dino = subject_fidelity(judges.dino_images(generated), judges.dino_images(subject.photos))
        clip_images = judges.clip_images(generated)
        clip_i = subject_fidelity(clip_images, judges.clip_images(subject.photos))
        clip_t = prompt_fidelity(clip_images, judges.clip_texts(judged))
        rows += [MetricRow(step, subject.token, name, value.mean, value.spread)
                 for name, value in (("dino", dino), ("clip_i", clip_i), ("clip_t", clip_t))]
        if subject.person and judges.faces is not None:
            rows += identity_rows(judges, subject, generated, step)
    return rows


def identity_rows(judges: Judges, subject: Subject, generated: list[Image.Image],
                  step: int) -> list[MetricRow]:
    """Face identity and the share of images without a face; none when no photo shows a face."""
    score = face_identity(judges.faces, generated, subject.photos)
    if score is None:
        return []
    rows = [MetricRow(step, subject.token, "no_face", score.no_face, 0.0)]
    if score.similarity is not None:
        similarity = score.similarity
        rows.append(MetricRow(step, subject.token, "identity", similarity.mean, similarity.spread))
    return rows


def render_subject(pipeline, subject: Subject, spec: EvaluationSpec) -> tuple[list[Image.Image], list[str]]:
    """(images, the prompt each is judged against, without the identifier)."""
    images, judged = [], []
    prompts = evaluation_prompts(subject.token, subject.class_word, subject.live, spec.prompts)
    for j, prompt in enumerate(prompts):
        first = j * spec.images_per_prompt
        generators = [generator_for(spec.seed, first + i, f"{SEED_STREAM}:{subject.token}")
                      for i in range(spec.images_per_prompt)]
        images += render(pipeline, prompt.generate, generators, spec.resolution, spec.inference_steps,
                         spec.guidance_scale)
        judged += [prompt.judge] * spec.images_per_prompt
    return images, judged


