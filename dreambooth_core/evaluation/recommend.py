"""The recommended step: the most faithful to the subject before the prompt stops being followed.

Training longer raises subject fidelity and, past some step, lowers prompt fidelity
(the model draws the photos whatever the prompt says: overfitting). The rule: among the
steps whose prompt fidelity is at least KEEP_PROMPT_FIDELITY of the base model's, the one
with the highest subject fidelity (DINO); on a tie, the earlier step.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

KEEP_PROMPT_FIDELITY = 0.9


class StepScores(BaseModel):
    """One evaluated step's means (for one subject, or averaged over subjects)."""

    model_config = ConfigDict(frozen=True)
    step: int
    dino: float
    clip_i: float
    clip_t: float


class Recommendation(BaseModel):
    model_config = ConfigDict(frozen=True)
    step: int | None
    rule: str
    reason: str


def rule_text(keep: float = KEEP_PROMPT_FIDELITY) -> str:
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
    best = min(kept, key=lambda s: (-s.dino, s.step))
    return Recommendation(step=best.step, rule=rule_text(keep), reason=(
        f"step {best.step}: DINO {best.dino:.3f}, CLIP-T {best.clip_t:.3f} (at least {floor:.3f}); "
        f"{len(scores) - len(kept)} of {len(scores)} evaluated steps fall below that CLIP-T"))
