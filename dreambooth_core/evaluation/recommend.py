"""The recommended step: the most faithful to the subject before the prompt stops being followed.

Training longer raises subject fidelity and, past some step, lowers prompt fidelity
(the model draws the photos whatever the prompt says: overfitting). The rule: among the
steps whose prompt fidelity is at least KEEP_PROMPT_FIDELITY of the base model's, the one
with the highest subject fidelity (DINO); on a tie, the earlier step.

For people (every step has a face identity score), subject fidelity is the face's: DINO rewards
copying the photos' backgrounds and poses, and a face can drift to another person's while DINO
rises. Among the steps that keep the prompt, those where at most MAX_NO_FACE of the images show
no face; of them the one with the highest face identity. When every step draws too few faces,
the DINO rule decides, and the reason says so.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

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
                f"without a face, CLIP-T {best.clip_t:.3f} (at least {floor:.3f}); {len(scores) - len(faced)} of "
                f"{len(scores)} evaluated steps fall below that CLIP-T or draw too few faces"))
        best = min(kept, key=lambda s: (-s.dino, s.step))
        return Recommendation(step=best.step, rule=rule_text(keep), reason=(
            f"step {best.step}: DINO {best.dino:.3f}, CLIP-T {best.clip_t:.3f}; no step that keeps the "
            f"prompt shows a face in at least {1 - MAX_NO_FACE:.0%} of its images, so face identity "
            "could not decide"))
    best = min(kept, key=lambda s: (-s.dino, s.step))
    return Recommendation(step=best.step, rule=rule_text(keep), reason=(
        f"step {best.step}: DINO {best.dino:.3f}, CLIP-T {best.clip_t:.3f} (at least {floor:.3f}); "
        f"{len(scores) - len(kept)} of {len(scores)} evaluated steps fall below that CLIP-T"))
