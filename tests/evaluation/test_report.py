"""reports/evaluation.csv round trip, per-step scores, the plot as an image, and the recommended step."""

import io

from PIL import Image

from dreambooth_core.evaluation.report import (
    MetricRow,
    StepScores,
    evaluation_csv_text,
    evaluation_plot_png,
    parse_evaluation_csv,
    recommend_step,
    step_scores,
)


def rows():
    out = []
    for step, dino, clip_t in ((0, 0.10, 0.30), (100, 0.40, 0.29), (200, 0.70, 0.20)):
        for subject, shift in (("shrk", 0.0), ("zwx", 0.1)):
            out += [MetricRow(step, subject, "dino", dino + shift, 0.01),
                    MetricRow(step, subject, "clip_i", dino + shift + 0.2, 0.02),
                    MetricRow(step, subject, "clip_t", clip_t, 0.03)]
    return out


def test_the_csv_reads_back_exactly_and_skips_a_damaged_line():
    text = evaluation_csv_text(rows())
    assert text.splitlines()[0] == "step,subject,metric,mean,spread"
    assert sorted(parse_evaluation_csv(text)) == sorted(rows())
    damaged = text + "300,shrk,dino,not-a-number,0.1\n"
    assert sorted(parse_evaluation_csv(damaged)) == sorted(rows())


def test_scores_average_the_subjects_unless_one_is_named():
    both, one = step_scores(rows()), step_scores(rows(), "zwx")
    assert list(both) == [0, 100, 200]
    assert abs(both[100].dino - 0.45) < 1e-12 and abs(one[100].dino - 0.50) < 1e-12
    assert abs(one[200].clip_i - 1.0) < 1e-12


def test_the_plot_marks_the_recommended_step():
    scores = step_scores(rows())
    recommendation = recommend_step([s for step, s in scores.items() if step], base_clip_t=scores[0].clip_t)
    assert recommendation.step == 100
    png = evaluation_plot_png(rows(), recommendation, "session shrk")
    image = Image.open(io.BytesIO(png))
    assert image.size == (900, 450)
    colours = {colour for _, colour in image.convert("RGB").getcolors(1 << 20)}
    assert {(31, 119, 180), (44, 160, 44), (214, 39, 40), (255, 127, 14)} <= colours
    unmarked = Image.open(io.BytesIO(evaluation_plot_png(rows(), None, "session shrk"))).convert("RGB")
    assert (255, 127, 14) not in {colour for _, colour in unmarked.getcolors(1 << 20)}


# The recommended step.
def scores(*rows):
    return [StepScores(step=s, dino=d, clip_i=d, clip_t=t) for s, d, t in rows]


def test_the_recommended_step_is_the_most_faithful_before_the_prompt_is_lost():
    # The base model follows prompts at CLIP-T 0.30; 90% of that is 0.27.
    evaluated = scores((100, 0.40, 0.31), (200, 0.55, 0.29), (300, 0.60, 0.27), (400, 0.70, 0.22))
    recommendation = recommend_step(evaluated, base_clip_t=0.30)
    assert recommendation.step == 300  # 400 is more like the photos, but has stopped following prompts
    assert "90% of the base model's" in recommendation.rule
    assert "1 of 4 evaluated steps" in recommendation.reason


def test_a_tie_goes_to_the_earlier_step():
    assert recommend_step(scores((300, 0.6, 0.3), (200, 0.6, 0.3)), base_clip_t=0.3).step == 200


def test_when_every_step_overfits_the_earliest_is_named_with_what_to_do():
    recommendation = recommend_step(scores((200, 0.7, 0.10), (100, 0.6, 0.12)), base_clip_t=0.30)
    assert recommendation.step == 100
    assert "all overfit" in recommendation.reason and "fewer steps" in recommendation.reason


def test_nothing_evaluated_recommends_nothing():
    assert recommend_step([], base_clip_t=0.3).step is None
