"""reports/evaluation.csv and its plot: each evaluated step's metrics, per subject; and the step
they recommend (below).

    step,subject,metric,mean,spread      metric: dino, clip_i or clip_t; for people also
                                         identity and no_face (face_identity.py)

Step 0 is the base model, the reference the recommended-step rule compares with.
"""

from __future__ import annotations

import csv
import io
from statistics import fmean
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

from dreambooth_core.reports.chart import Chart, padded_range
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import EVALUATION_CSV

HEADER = ("step", "subject", "metric", "mean", "spread")
METRICS = {"dino": ("subject fidelity (DINO)", (31, 119, 180)),
           "clip_i": ("subject fidelity (CLIP-I)", (44, 160, 44)),
           "clip_t": ("prompt fidelity (CLIP-T)", (214, 39, 40))}
# Measured for person subjects only: a step's value is their mean over those.
PERSON_METRICS = {"identity": ("face identity (ArcFace)", (148, 103, 189)),
                  "no_face": ("share of images without a face", None)}
RECOMMENDED = (255, 127, 14)  # orange: no other line blends into it
BASE_STEP = 0


class MetricRow(NamedTuple):
    step: int
    subject: str
    metric: str
    mean: float
    spread: float


def evaluation_csv_text(rows: list[MetricRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for row in sorted(rows):
        writer.writerow((row.step, row.subject, row.metric, repr(row.mean), repr(row.spread)))
    return out.getvalue()


def parse_evaluation_csv(text: str) -> list[MetricRow]:
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        try:
            rows.append(MetricRow(int(record["step"]), record["subject"], record["metric"],
                                  float(record["mean"]), float(record["spread"])))
        except (KeyError, TypeError, ValueError):
            continue  # a damaged line: that step is evaluated again
    return rows


def read_evaluation(session: Session) -> list[MetricRow]:
    if not session.exists(EVALUATION_CSV):
        return []
    return parse_evaluation_csv(session.read_bytes(EVALUATION_CSV).decode())


def step_scores(rows: list[MetricRow], subject: str | None = None) -> dict[int, StepScores]:
    """Per step, each metric's mean (over subjects, unless one is named); steps missing a
    metric are left out."""
    values: dict[tuple[int, str], list[float]] = {}
    for row in rows:
        if subject is None or row.subject == subject:
            values.setdefault((row.step, row.metric), []).append(row.mean)
    steps = sorted({step for step, _ in values})
    return {step: StepScores(step=step, **{m: fmean(values[step, m]) for m in [*METRICS, *PERSON_METRICS]
                                          if (step, m) in values})
            for step in steps if all((step, m) in values for m in METRICS)}


def evaluation_plot_png(rows: list[MetricRow], recommendation: Recommendation | None, title: str) -> bytes:
    """A 900x450 PNG of the three metrics (averaged over subjects) against step, step 0
    being the base model; a dashed line at the recommended step."""
    scores = list(step_scores(rows).values())
    steps = [s.step for s in scores]
    series = {m: [getattr(s, m) for s in scores] for m in METRICS}
    values = sum(series.values(), []) + [s.identity for s in scores if s.identity is not None]
    chart = Chart(900, 450, padded_range(steps, (0.0, 1.0)), padded_range(values))
    chart.axes(title, "step (0: base model)", "cosine similarity", integer_x=True)
    if recommendation is not None and recommendation.step is not None:
        chart.dashed_vertical(recommendation.step, RECOMMENDED)
    for metric, (_, colour) in METRICS.items():
        chart.points(steps, series[metric], colour, radius=3.5)
        chart.line(steps, series[metric], colour)
    legend = [(label, colour) for label, colour in METRICS.values()]
    identity = [(s.step, s.identity) for s in scores if s.identity is not None]
    if identity:  # people: the face's likeness, on the same axis (a cosine too)
        label, colour = PERSON_METRICS["identity"]
        chart.points([x for x, _ in identity], [y for _, y in identity], colour, radius=3.5)
        chart.line([x for x, _ in identity], [y for _, y in identity], colour)
        legend.append((label, colour))
    if recommendation is not None and recommendation.step is not None:
        legend.append((f"recommended: step {recommendation.step}", RECOMMENDED))
    chart.legend(legend)
    return chart.png()


# The recommended step: the most faithful to the subject before the prompt stops being followed.
#
# Training longer raises subject fidelity and, past some step, lowers prompt fidelity
# (the model draws the photos whatever the prompt says: overfitting). The rule: among the
# steps whose prompt fidelity is at least KEEP_PROMPT_FIDELITY of the base model's, the one
# with the highest subject fidelity (DINO); on a tie, the earlier step.
#
# For people (every step has a face identity score), subject fidelity is the face's: DINO rewards
# copying the photos' backgrounds and poses, and a face can drift to another person's while DINO
# rises. Among the steps that keep the prompt, those where at most MAX_NO_FACE of the images show
# no face; of them the one with the highest face identity. When every step draws too few faces,
# the DINO rule decides, and the reason says so.

KEEP_PROMPT_FIDELITY = 0.9
MAX_NO_FACE = 0.5  # a step that draws no face in more than half its images has lost the person


class StepScores(BaseModel):
    """One evaluated step's means (for one subject, or averaged over subjects)."""

    model_config = ConfigDict(frozen=True)
    step: int
    dino: float
    clip_i: float
    clip_t: float
    identity: float | None = None  # person subjects only (face_identity.py)
    no_face: float | None = None


class Recommendation(BaseModel):
    model_config = ConfigDict(frozen=True)
    step: int | None
    rule: str
    reason: str


def rule_text(keep: float = KEEP_PROMPT_FIDELITY, people: bool = False) -> str:
    if people:
        return (f"highest face identity (ArcFace) among the steps whose prompt fidelity (CLIP-T) is at least "
                f"{keep:.0%} of the base model's and at most {MAX_NO_FACE:.0%} of whose images show no face; "
                "on a tie, the earlier step")
    return (f"highest subject fidelity (DINO) among the steps whose prompt fidelity (CLIP-T) is at "
            f"least {keep:.0%} of the base model's; on a tie, the earlier step")


def recommend_step(scores: list[StepScores], base_clip_t: float,
                   keep: float = KEEP_PROMPT_FIDELITY) -> Recommendation:
    """`base_clip_t`: the base model's prompt fidelity on the same prompts and seeds."""
    if not scores:
        return Recommendation(step=None, rule=rule_text(keep), reason="no step has been evaluated yet")
    floor = keep * base_clip_t
    kept = [s for s in scores if s.clip_t >= floor]
    if not kept:
        earliest = min(scores, key=lambda s: s.step)
        return Recommendation(step=earliest.step, rule=rule_text(keep), reason=(
            f"every evaluated step's CLIP-T is below {floor:.3f} ({keep:.0%} of the base model's "
            f"{base_clip_t:.3f}): all overfit; the earliest, step {earliest.step}, overfits least. "
            "Evaluate earlier steps or train a new session with fewer steps or a lower learning rate"))
    if all(s.no_face is not None for s in scores):  # people: a step drawing no face has no identity
        faced = [s for s in kept if s.identity is not None and s.no_face <= MAX_NO_FACE]
        if faced:
            best = min(faced, key=lambda s: (-s.identity, s.step))
            return Recommendation(step=best.step, rule=rule_text(keep, people=True), reason=(
                f"step {best.step}: face identity {best.identity:.3f}, {best.no_face:.0%} of images "
                f"without a face, CLIP-T {best.clip_t:.3f} (at least {floor:.3f}); "
                f"{len(scores) - len(faced)} of {len(scores)} evaluated steps fall below that "
                "CLIP-T or draw too few faces"))
        best = min(kept, key=lambda s: (-s.dino, s.step))
        return Recommendation(step=best.step, rule=rule_text(keep), reason=(
            f"step {best.step}: DINO {best.dino:.3f}, CLIP-T {best.clip_t:.3f}; no step that keeps the "
            f"prompt shows a face in at least {1 - MAX_NO_FACE:.0%} of its images, so face identity "
            "could not decide"))
    best = min(kept, key=lambda s: (-s.dino, s.step))
    return Recommendation(step=best.step, rule=rule_text(keep), reason=(
        f"step {best.step}: DINO {best.dino:.3f}, CLIP-T {best.clip_t:.3f} (at least {floor:.3f}); "
        f"{len(scores) - len(kept)} of {len(scores)} evaluated steps fall below that CLIP-T"))
