"""Derived values: step counts and the chunk plan."""

import pytest
from pydantic import ValidationError

from tasks.config import DreamBoothConfig, differing_fields, plan_chunks, total_steps


def test_default_steps_follow_the_hundred_per_photo_rule():
    assert total_steps(DreamBoothConfig(session="s"), 5) == 500
    assert total_steps(DreamBoothConfig(session="s"), 40) == 4000
    assert total_steps(DreamBoothConfig(session="s", steps=1500), 40) == 1500


def test_chunks_cover_every_step_once_and_end_on_multiples():
    chunks = plan_chunks(1100, 500)
    assert [(c.start, c.end) for c in chunks] == [(0, 500), (500, 1000), (1000, 1100)]
    assert [(c.index, c.count) for c in chunks] == [(1, 3), (2, 3), (3, 3)]


def test_extending_a_run_keeps_its_earlier_chunks():
    def ranges(chunks):
        return [(c.start, c.end) for c in chunks]
    assert ranges(plan_chunks(1000, 500)) == ranges(plan_chunks(1500, 500))[:2]


def test_differing_fields_names_only_changes():
    assert differing_fields({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == ["b", "c"]


@pytest.mark.parametrize("bad", [{"session": "../x"}, {"session": "s", "resolution": 500},
                                 {"session": "s", "keep_checkpoints": 1}, {"session": "s", "surprise": 1}])
def test_invalid_values_are_refused(bad):
    with pytest.raises(ValidationError):
        DreamBoothConfig(**bad)
