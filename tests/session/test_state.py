"""session.json: typed, read and written in one place; a session of format 1 (written only by unreleased
versions) is refused, naming the file, and this version still computes the fingerprint it recorded."""

import json
import shutil
from pathlib import Path

import pytest
from sessions import opened_session

from dreambooth_core.captions.captioning import captions_digest
from dreambooth_core.config import fingerprint_values
from dreambooth_core.errors import ConfigError, SessionError
from dreambooth_core.hashing import digest
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.class_images import ClassImages
from dreambooth_core.session.dataset_manifest import DatasetManifest, load_dataset_manifest
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import CLASS_MANIFEST, SESSION_FILE
from dreambooth_core.session.state import (
    ExportRecord,
    SessionState,
    committed_state,
    kept_in_memory,
    load_state,
    open_or_create,
    save_state,
    update_state,
)

# Written by unreleased version 1 (format 1: flat settings, token verdicts under "subjects"):
# `dreambooth train --session old --model tiny --steps 4 --chunk-steps 2 --class-word man
# --class-images 2 --learning-rate 1e-4 --seed 7` on examples/photos, on a CPU. Its checkpoints are left
# out; their metadata is the fingerprint's digest.
VERSION_1 = Path(__file__).resolve().parents[1] / "data" / "version1-session"


@pytest.fixture
def old_session(tmp_path) -> Session:
    shutil.copytree(VERSION_1, tmp_path / "old")
    return Session(str(tmp_path), "old")


@pytest.fixture
def trained_session(old_session) -> Session:
    """The version-1 session with its session.json written in the current format (the same
    settings, photos and fingerprint)."""
    data = old_session.read_json(SESSION_FILE)
    data = {k: v for k, v in data.items() if k != "subjects"} | {
        "format": 2, "token_verdicts": data["subjects"]}
    save_state(old_session, SessionState.model_validate(data))
    return old_session


def test_a_format_1_session_is_refused_naming_the_file_and_what_to_do(old_session):
    before = old_session.read_bytes(SESSION_FILE)
    with pytest.raises(SessionError) as error:
        load_state(old_session)
    message = str(error.value)
    assert f"{old_session.url}/{SESSION_FILE} is in session format 1" in message
    assert "Start a new session: pass another --session name with --photos" in message
    assert old_session.read_bytes(SESSION_FILE) == before  # nothing rewritten


def test_this_version_computes_the_fingerprint_version_1_recorded(trained_session):
    """So checkpoints (which carry the fingerprint's digest) of sessions trained before later settings
    existed resume, and nothing is refused (DreamBoothConfig.ADDED_LATER)."""
    state = load_state(trained_session)
    assert (state.config.base_model.model, state.config.captions.class_word, state.config.training.seed,
            state.training_started, state.export.step) == ("tiny", "man", 7, True, 4)
    recorded = state.fingerprint
    manifest = load_dataset_manifest(trained_session)
    assert DatasetManifest.prepared_digest(manifest.resolution, manifest.photos_digest, manifest.method,
                                           manifest.items) == manifest.digest
    assert captions_digest(manifest) == recorded["dataset"]
    class_images = ClassImages.model_validate(trained_session.read_json(CLASS_MANIFEST))
    values = fingerprint_values(state.config, state.total_steps, "no", recorded["model content"],  # on a CPU
                                recorded["dataset"], class_images.digest)
    assert values == recorded
    assert digest(values) == state.export.fingerprint


@pytest.mark.parametrize("first, then", [("auto", "int8"), ("int8", "auto"), ("int8", "nf4"), ("auto", "bf16")])
def test_another_base_precision_is_refused_on_a_trained_session(trained_session, first, then):
    """The base precision decides the trained weights: a session trained on one does not continue on
    another, as with any training setting (a session from before the setting trained as auto)."""
    state = load_state(trained_session)
    trained = state.config.model_copy(update={
        "training": state.config.training.model_copy(update={"base_precision": first})})
    save_state(trained_session, state.model_copy(update={"config": trained}))
    open_or_create(trained_session, trained)  # the same settings continue
    other = trained.model_copy(update={"training": trained.training.model_copy(update={"base_precision": then})})
    with pytest.raises(ConfigError, match=f"trained with different settings: base_precision "
                                          f"\(session: '{first}', now: '{then}'\).*new --session"):
        open_or_create(trained_session, other)


def test_saving_writes_the_current_format_and_keeps_every_field(trained_session):
    state = load_state(trained_session)
    save_state(trained_session, state)
    data = json.loads(trained_session.read_bytes(SESSION_FILE))
    assert data["format"] == 2 and data["token_verdicts"] == {"shrk": "good"}
    assert set(data["config"]) == {"session", "inputs", "base_model", "captions", "checks", "training",
                                   "samples", "evaluation", "export", "runtime"}
    assert load_state(trained_session) == state


@pytest.mark.parametrize(("content", "says"), [
    (b"{not json", "is not valid JSON"),
    (json.dumps({"format": 2, "config": {"session": "s", "steps": 0}}).encode(), "config.training.steps"),
    (json.dumps({"format": 9, "config": {}}).encode(), "newer version"),
])
def test_a_damaged_or_newer_file_is_named_with_what_to_do(tmp_path, content, says):
    session = Session(str(tmp_path), "s")
    session.write_bytes(SESSION_FILE, content)
    with pytest.raises(SessionError, match=says) as error:
        load_state(session)
    assert f"{session.url}/{SESSION_FILE}" in str(error.value)


def committed_session(tmp_path, runs: dict[int, str | None]) -> Session:
    """A session with a checkpoint at each step of `runs`, committed by that run (None: by a version
    that did not record the run)."""
    session = opened_session(tmp_path)
    store = CheckpointStore(session, keep=len(runs) + 1)
    for step, run in runs.items():
        meta = {"fingerprint": "f"} | ({"run": run} if run else {})
        store.save(step, {"weights.bin": lambda f: f.write(b"w")}, meta)
    return session


def test_a_step_is_done_by_the_run_whose_checkpoint_holds_it_while_the_checkpoint_is_there(tmp_path):
    session = committed_session(tmp_path, {4: "a", 8: "b"})
    done = committed_state(session, load_state(session), "f")
    assert done.latest_step == 8
    assert [done.step_done_by(step) for step in (2, 4, 6, 8, 10)] == ["a", "a", "b", "b", None]
    session.remove("checkpoints/step-000008/weights.bin")  # lost: what trained steps 5-8 is gone
    after = committed_state(session, load_state(session), "f")
    assert [after.step_done_by(step) for step in (4, 6, 8)] == ["a", None, None]
    assert after.latest_step == 4 and after.run != done.run  # every reading is another run


def test_a_checkpoint_of_an_earlier_version_is_done_by_its_commit(tmp_path):
    session = committed_session(tmp_path, {4: None})
    done_by = committed_state(session, load_state(session), "f").step_done_by(4)
    assert done_by.startswith("committed at ")
    assert committed_state(session, load_state(session), "f").step_done_by(4) == done_by


def test_outputs_are_done_for_their_training_step_and_precision_while_all_of_them_are_there(tmp_path):
    session = opened_session(tmp_path)
    session.write_bytes("s.safetensors", b"model")
    session.write_bytes("s.ckpt", b"model")
    update_state(session, outputs={"s.safetensors": 5, "s.ckpt": 5},
                 export=ExportRecord(fingerprint="f", step=4, precision="fp16", run="a"))
    done = committed_state(session, load_state(session), "f")
    assert done.export_done_by(4, "fp16") == "a"
    assert done.export_done_by(4, "fp32") is None and done.export_done_by(8, "fp16") is None
    assert committed_state(session, load_state(session), "other training").export_done_by(4, "fp16") is None
    session.remove("s.ckpt")
    assert committed_state(session, load_state(session), "f").export_done_by(4, "fp16") is None


def test_while_kept_in_memory_the_file_is_read_once_and_saves_still_write_it(trained_session, monkeypatch):
    reads = []
    original = Session.read_bytes
    monkeypatch.setattr(Session, "read_bytes",
                        lambda self, relative: reads.append(relative) or original(self, relative))
    with kept_in_memory(trained_session):
        assert load_state(trained_session) is load_state(trained_session)
        update_state(trained_session, status="new")
        assert load_state(trained_session).status == "new"
        assert reads == [SESSION_FILE]
    assert json.loads(original(trained_session, SESSION_FILE))["status"] == "new"  # written through
    trained_session.write_json(SESSION_FILE, {**json.loads(original(trained_session, SESSION_FILE)),
                                              "status": "complete"})  # by the next writer
    assert load_state(trained_session).status == "complete"  # read again once the run let go
