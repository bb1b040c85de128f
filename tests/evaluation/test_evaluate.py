"""Evaluating the tiny model end to end: fixed-seed renders judged by the tiny judges."""

from pathlib import Path

import pytest
from PIL import Image

from dreambooth_core.evaluation.evaluate import EvaluationSpec, Subject, evaluate_pipeline, render_subject
from dreambooth_core.evaluation.judges import fetch_judges, load_judges
from dreambooth_core.generation.pipeline import build_pipeline

pytestmark = pytest.mark.slow  # builds and runs models: the full suite only
REPO = Path(__file__).resolve().parents[2]
SPEC = EvaluationSpec(resolution=32, prompts=2, images_per_prompt=2, inference_steps=2)


@pytest.fixture(scope="module")
def setup(tiny_model_path, tmp_path_factory):
    judges = load_judges(*fetch_judges("tiny", tmp_path_factory.mktemp("judges")))
    photos = [Image.open(p).convert("RGB") for p in sorted((REPO / "examples" / "photos").iterdir())[:2]]
    return build_pipeline(tiny_model_path, "cpu"), judges, Subject("shrk", "man", True, photos)


def test_every_subject_gets_the_three_metrics_for_the_step(setup):
    pipeline, judges, subject = setup
    rows = evaluate_pipeline(pipeline, judges, [subject, Subject("zwx", "dog", True, subject.photos)], SPEC, 40)
    assert [(r.step, r.subject, r.metric) for r in rows] == [
        (40, s, m) for s in ("shrk", "zwx") for m in ("dino", "clip_i", "clip_t")]
    assert all(-1 <= r.mean <= 1 and r.spread >= 0 for r in rows)


def test_the_same_spec_renders_the_same_images_and_prompts_without_the_identifier(setup):
    pipeline, _, subject = setup
    first, judged = render_subject(pipeline, subject, SPEC)
    again, _ = render_subject(pipeline, subject, SPEC)
    assert len(first) == 4 and [a.tobytes() for a in first] == [b.tobytes() for b in again]
    assert first[0].tobytes() != first[1].tobytes()  # each image its own noise
    assert judged[0] == judged[1] and "shrk" not in " ".join(judged) and "man" in judged[0]


def test_a_person_gets_face_identity_and_the_share_of_images_without_a_face(setup, tmp_path):
    import dataclasses

    from dreambooth_core.evaluation.face_identity import FaceEmbedder, fetch_face_model

    pipeline, judges, subject = setup
    judges = dataclasses.replace(judges, faces=FaceEmbedder(fetch_face_model("tiny", tmp_path)))
    person = dataclasses.replace(subject, person=True)
    dog = Subject("zwx", "dog", True, subject.photos)
    rows = evaluate_pipeline(pipeline, judges, [person, dog], SPEC, 40)
    metrics = [(r.subject, r.metric) for r in rows]
    # The tiny model draws 32 px noise: no face in any image, so no identity, and a share of 1.
    assert ("shrk", "no_face") in metrics and ("shrk", "identity") not in metrics
    assert next(r.mean for r in rows if r.metric == "no_face") == 1.0
    assert not any(s == "zwx" and m in ("no_face", "identity") for s, m in metrics)  # a dog: not measured
