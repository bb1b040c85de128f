"""session.json: typed, read and written in one place; sessions of version 1 still read and resume."""

import json
import shutil
from pathlib import Path

import pytest
from sessions import opened_session

from dreambooth_core.captions.captioning import captions_digest
from dreambooth_core.errors import ConfigError, SessionError
from dreambooth_core.hashing import digest
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.class_images import ClassImages
from dreambooth_core.session.dataset_manifest import DatasetManifest, load_dataset_manifest
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import CLASS_MANIFEST, SESSION_FILE
from dreambooth_core.session.state import (
    ExportRecord,
    committed_state,
    load_state,
    open_or_create,
    save_state,
    update_state,
)
from dreambooth_core.training.plan import fingerprint_values

# Written by version 1 (flat settings, token verdicts under "subjects"): `dreambooth train --session old
# --model tiny --steps 4 --chunk-steps 2 --class-word man --class-images 2 --learning-rate 1e-4 --seed 7`
# on examples/photos, on a CPU. Its checkpoints are left out; their metadata is the fingerprint's digest.
VERSION_1 = Path(__file__).resolve().parents[1] / "data" / "version1-session"


@pytest.fixture
def old_session(tmp_path) -> Session:
    shutil.copytree(VERSION_1, tmp_path / "old")
    return Session(str(tmp_path), "old")


def test_a_version_1_session_reads_as_it_was_written(old_session):
    state = load_state(old_session)
    config = state.config
    assert (config.base_model.model, config.captions.class_word, config.training.seed, config.training.steps,
            config.runtime.chunk_steps, config.samples.sample_every) == ("tiny", "man", 7, 4, 2, 0)
    assert state.token_verdicts == {"shrk": "good"} and state.training_started
    assert (state.status, state.export.step, state.total_steps) == ("complete", 4, 4)
    assert sorted(state.photos) == [f"shrk ({n}).jpg" for n in range(1, 5)]


def test_this_version_computes_the_fingerprint_version_1_recorded(old_session):
    """So its checkpoints (which carry the fingerprint's digest) resume, and nothing is refused."""
    state = load_state(old_session)
    recorded = state.fingerprint
    manifest = load_dataset_manifest(old_session)
    assert DatasetManifest.prepared_digest(manifest.resolution, manifest.photos_digest, manifest.method,
                                           manifest.items) == manifest.digest
    assert captions_digest(manifest) == recorded["dataset"]
    class_images = ClassImages.model_validate(old_session.read_json(CLASS_MANIFEST))
    on_cpu = state.config.model_copy(update={"runtime": state.config.runtime.model_copy(update={"device": "cpu"})})
    values = fingerprint_values(on_cpu, state.total_steps, recorded["model content"], recorded["dataset"],
                                class_images)
    assert values == recorded
    assert digest(values) == state.export.fingerprint


@pytest.mark.parametrize("first, then", [("auto", "int8"), ("int8", "auto"), ("int8", "nf4"), ("auto", "bf16")])
def test_another_base_precision_is_refused_on_a_trained_session(old_session, first, then):
    """The base precision decides the trained weights: a session trained on one does not continue on
    another, as with any training setting (a session from before the setting trained as auto)."""
    state = load_state(old_session)
    trained = state.config.model_copy(update={
        "training": state.config.training.model_copy(update={"base_precision": first})})
    save_state(old_session, state.model_copy(update={"config": trained}))
    open_or_create(old_session, trained)  # the same settings continue
    other = trained.model_copy(update={"training": trained.training.model_copy(update={"base_precision": then})})
    with pytest.raises(ConfigError, match=f"trained with different settings: base_precision "
                                          f"\(session: '{first}', now: '{then}'\).*new --session"):
        open_or_create(old_session, other)


def test_saving_writes_the_current_format_and_keeps_every_field(old_session):
    state = load_state(old_session)
    save_state(old_session, state)
    data = json.loads(old_session.read_bytes(SESSION_FILE))
    assert data["format"] == 2 and "subjects" not in data and data["token_verdicts"] == {"shrk": "good"}
    assert set(data["config"]) == {"session", "inputs", "base_model", "captions", "checks", "training",
                                   "samples", "evaluation", "export", "runtime"}
    assert load_state(old_session) == state


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
