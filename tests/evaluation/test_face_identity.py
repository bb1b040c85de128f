"""Face identity: the ArcFace-style score on known embeddings, the share without a face, the tiny
onnxruntime stand-in on real photos, and the recommended step for a person."""

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from dreambooth_core.evaluation.face_identity import (
    FaceEmbedder,
    face_crop,
    face_identity,
    fetch_face_model,
    identity_score,
)
from dreambooth_core.evaluation.report import MetricRow, StepScores, recommend_step, step_scores

PHOTOS = sorted((Path(__file__).resolve().parents[2] / "examples" / "photos").iterdir())


def test_the_score_of_known_embeddings_and_the_share_without_a_face():
    photos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    generated = [torch.tensor([2.0, 0.0]), None, torch.tensor([1.0, 1.0]), None]
    score = identity_score(generated, photos)
    # image 1: cosines 1 and 0 (mean 0.5); image 3: 1/sqrt(2) with both; the faceless are left out.
    assert score.similarity.mean == pytest.approx((0.5 + math.sqrt(0.5)) / 2)
    assert score.no_face == 0.5
    assert identity_score([None, None], photos).similarity is None


@pytest.fixture(scope="module")
def embed(tmp_path_factory):
    return FaceEmbedder(fetch_face_model("tiny", tmp_path_factory.mktemp("faces")))


def test_the_tiny_model_scores_a_photo_against_itself_as_one_and_counts_a_faceless_image(embed):
    photos = [Image.open(p).convert("RGB") for p in PHOTOS[:2]]
    assert all(face_crop(p).size == (112, 112) for p in photos)
    score = face_identity(embed, [photos[0], Image.new("RGB", (200, 200), (90, 140, 200))], photos[:1])
    assert score.similarity.mean == pytest.approx(1.0) and score.no_face == 0.5
    assert face_identity(embed, photos, [Image.new("RGB", (200, 200))]) is None  # no face in the photos


def test_for_a_person_the_recommended_step_is_the_most_like_the_face_that_keeps_the_prompt():
    rows = []
    #        step, dino, clip_t, identity, no_face: step 300 copies the photos (DINO) but the face drifts;
    #        step 400 keeps the face best but draws it in too few images; step 500 loses the prompt.
    for step, dino, clip_t, identity, no_face in ((0, 0.1, 0.30, 0.05, 0.0), (100, 0.3, 0.29, 0.40, 0.0),
                                                  (200, 0.5, 0.28, 0.62, 0.25), (300, 0.7, 0.28, 0.35, 0.0),
                                                  (400, 0.6, 0.28, 0.70, 0.75), (500, 0.8, 0.10, 0.80, 0.0)):
        rows += [MetricRow(step, "shrk", "dino", dino, 0), MetricRow(step, "shrk", "clip_i", dino, 0),
                 MetricRow(step, "shrk", "clip_t", clip_t, 0), MetricRow(step, "shrk", "no_face", no_face, 0),
                 MetricRow(step, "shrk", "identity", identity, 0)]
    scores = step_scores(rows)
    trained = [s for step, s in scores.items() if step]
    recommendation = recommend_step(trained, scores[0].clip_t)
    assert recommendation.step == 200 and "face identity 0.620" in recommendation.reason
    assert "face identity (ArcFace)" in recommendation.rule
    objects = [StepScores(step=s.step, dino=s.dino, clip_i=s.clip_i, clip_t=s.clip_t) for s in trained]
    assert recommend_step(objects, scores[0].clip_t).step == 300  # without faces: the DINO rule
    faceless = [s.model_copy(update={"identity": None, "no_face": 1.0}) for s in trained]
    fallback = recommend_step(faceless, scores[0].clip_t)
    assert fallback.step == 300 and "face identity could not decide" in fallback.reason
