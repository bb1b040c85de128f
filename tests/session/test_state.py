"""session.json: typed, read and written in one place; sessions of version 1 still read and resume."""

import json
import shutil
from pathlib import Path

import pytest

from dreambooth_core.captions.captioning import captions_digest
from dreambooth_core.errors import ConfigError, SessionError
from dreambooth_core.hashing import digest
from dreambooth_core.session.class_images import ClassImages
from dreambooth_core.session.dataset_manifest import DatasetManifest, load_dataset_manifest
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import CLASS_MANIFEST, SESSION_FILE
from dreambooth_core.session.state import load_state, open_or_create, save_state
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
