"""Derived values: step counts and the chunk plan."""

from dreambooth_core.config import TrainingSettings
from dreambooth_core.training.plan import plan_chunks


def test_default_steps_follow_the_hundred_per_photo_rule():
    assert TrainingSettings().total_steps(5) == 500
    assert TrainingSettings().total_steps(40) == 4000
    assert TrainingSettings(steps=1500).total_steps(40) == 1500


def test_chunks_cover_every_step_once_and_end_on_multiples():
    chunks = plan_chunks(1100, 500)
    assert [(c.start, c.end) for c in chunks] == [(0, 500), (500, 1000), (1000, 1100)]
    assert [(c.index, c.count) for c in chunks] == [(1, 3), (2, 3), (3, 3)]


def test_extending_a_run_keeps_its_earlier_chunks():
    def ranges(chunks):
        return [(c.start, c.end) for c in chunks]
    assert ranges(plan_chunks(1000, 500)) == ranges(plan_chunks(1500, 500))[:2]
