"""The cache keys of training and export: a cached result matches only while the session holds what
it made, whatever Prefect remembers."""

from sessions import opened_session

from dreambooth_core.config import DreamBoothConfig
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.session.state import (
    ExportRecord,
    committed_state,
    load_state,
    open_or_create,
    update_state,
)
from dreambooth_core.training.plan import TrainingPlan
from tasks import session_cache_key


def planned(session: Session) -> TrainingPlan:
    """What a run's plan knows for its keys (the rest of a plan plays no part in them)."""
    ref = open_or_create(session, DreamBoothConfig(session=session.name))
    return TrainingPlan.model_construct(session=ref, fingerprint="f", total_steps=4,
                                        done=committed_state(session, load_state(session), "f"))


def run_commits(session: Session, plan: TrainingPlan) -> None:
    """What the run of `plan` leaves: the checkpoint at step 4 and the outputs of its export."""
    CheckpointStore(session).save(4, {"weights.bin": lambda f: f.write(b"w")},
                                  {"fingerprint": "f", "run": plan.done.run})
    session.write_bytes("s.safetensors", b"model")
    update_state(session, outputs={"s.safetensors": 5},
                 export=ExportRecord(fingerprint="f", step=4, precision="fp16", run=plan.done.run))


def keys(plan: TrainingPlan) -> tuple[str, str]:
    return session_cache_key(plan, 4), session_cache_key(plan, 4, "fp16")


def test_the_next_run_finds_what_a_run_cached_while_the_session_holds_it(tmp_path):
    session = opened_session(tmp_path)
    first = planned(session)
    run_commits(session, first)
    assert keys(planned(session)) == keys(first)  # a rerun: cached
    assert keys(planned(session)) == keys(first)


def test_a_result_whose_checkpoint_or_outputs_are_gone_is_never_found_again(tmp_path):
    session = opened_session(tmp_path)
    first = planned(session)
    run_commits(session, first)
    session.remove("s.safetensors")  # the export is gone, its checkpoint is not
    second = planned(session)
    assert session_cache_key(second, 4) == session_cache_key(first, 4)
    assert session_cache_key(second, 4, "fp16") != session_cache_key(first, 4, "fp16")
    session.remove("checkpoints/step-000004")  # and now the checkpoint
    third = planned(session)
    assert session_cache_key(third, 4) not in {session_cache_key(first, 4), session_cache_key(second, 4)}
    assert session_cache_key(third, 4, "fp16") != session_cache_key(second, 4, "fp16")
