"""The mistakes users make with each command, as a table: every row ends in one `error:` paragraph
on stderr that names what is wrong, exit code 2, and no traceback.

The fast rows run the CLI in this process with PREFECT_API_URL where nothing listens, so a row whose
check did not come first fails on that check's message instead of starting a run. Rows that need a
trained session, a process bound by file permissions or a whole run are slow or run in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from permissions import bound_by_permissions, deny_reading, deny_writing
from sessions import opened_session
from web_server import FakeServer, closed_port_url

from flows.cli import EXIT_USER_ERROR, main

REPO = Path(__file__).resolve().parents[2]
NO_SERVER = "no Prefect server answers"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.fixture
def places(tmp_path, photos, monkeypatch) -> dict[str, str]:
    """What the rows' arguments name: a storage holding an untrained session 'new', a file, photos."""
    monkeypatch.setenv("PREFECT_API_URL", closed_port_url("/api"))
    storage = tmp_path / "sessions"
    opened_session(storage, "new", model="tiny")
    (tmp_path / "a-file").write_text("not a folder")
    return {"storage": str(storage), "file": str(tmp_path / "a-file"), "photos": str(photos),
            "tmp": str(tmp_path)}


def train(*extra: str) -> list[str]:
    return ["train", "--session", "s", "--storage", "{storage}", "--model", "tiny", "--photos", "{photos}",
            "--steps", "2", *extra]


def on_new(command: str, *extra: str) -> list[str]:
    """`command` on the untrained session 'new'."""
    return [command, "--session", "new", "--storage", "{storage}", *extra]


ROWS = [
    # item 1: the device, checked against what torch can use here
    pytest.param(train("--device", "cuda"), ["--device cuda", "Devices here: cpu"], marks=no_cuda,
                 id="train --device cuda without CUDA"),
    pytest.param(train("--device", "banana"), ["--device 'banana' is not a device", "Devices here: cpu"],
                 id="train --device banana"),
    pytest.param(on_new("generate", "x", "--device", "cuda:1"), ["--device cuda:1", "Devices here: cpu"],
                 marks=no_cuda, id="generate --device cuda:1 without CUDA"),
    pytest.param(on_new("generate", "x", "--device", "banana"), ["--device 'banana' is not a device"],
                 id="generate --device banana"),
    # [lowvram] item 6: what this device cannot run, before a server starts
    pytest.param(train("--base-precision", "nf4"), ["--base-precision nf4 needs a CUDA GPU",
                                                    "--base-precision auto (--base-precision int8 or --base-precision fp8 runs on the "
                                                    "CPU)"],
                 marks=no_cuda, id="train --base-precision nf4 on the CPU"),
    pytest.param(train("--offload", "--step-in-backward", "--device", "cpu"), ["--offload keeps the trained model",
                                                                               "nothing to offload to"],
                 id="train --offload --device cpu"),
    # item 2: PREFECT_API_URL where nothing answers (set by the fixture)
    pytest.param(train(), [NO_SERVER, "unset PREFECT_API_URL", "temporary server of its own"],
                 id="train with PREFECT_API_URL down"),
    pytest.param(["status", "--storage-block", "x"], [NO_SERVER, "Prefect's own database"],
                 id="status --storage-block with PREFECT_API_URL down"),
    pytest.param(["automations", "apply"], [NO_SERVER, "Start that server"],
                 id="automations with PREFECT_API_URL down"),
    # item 10: sizes refused before they cost memory or days
    pytest.param(train("--steps", "10000000000"), ["--steps", "less than or equal to 1000000"],
                 id="train --steps 10^10"),
    pytest.param(train("--steps", "1000000", "--chunk-steps", "1"),
                 ["--chunk-steps 1 cuts 1000000 steps into 1000000 chunks", "--chunk-steps 100 or more"],
                 id="train chunk plan of 10^6 chunks"),
    pytest.param(train("--class-images", "100000"), ["--class-images", "less than or equal to 10000"],
                 id="train --class-images 100000"),
    pytest.param(on_new("generate", "x", "--width", "100000", "--height", "100000"),
                 ["--width 100000: Input should be less than or equal to 4096", "--height 100000"],
                 id="generate 100000 px"),
    pytest.param(on_new("evaluate", "--images", "100000"), ["--images 100000", "less than or equal to 64"],
                 id="evaluate --images 100000"),
    pytest.param(on_new("evaluate", "--prompts", "100"), ["--prompts 100", "less than or equal to 25"],
                 id="evaluate --prompts 100"),
    pytest.param(on_new("evaluate", "--inference-steps", "100000"), ["--inference-steps 100000", "500"],
                 id="evaluate --inference-steps 100000"),
    # item 12: a memory:// storage ends with the process
    pytest.param(["upload", "--session", "u", "--storage", "memory://", "--photos", "{photos}"],
                 ["memory:// lives in this process's memory only", "a folder or a gs:// bucket"],
                 id="upload --storage memory://"),
    pytest.param(["generate", "x", "--session", "s", "--storage", "memory://"],
                 ["no session 's' in memory://", "only while the command that made them runs"],
                 id="generate --storage memory://"),
    # generate
    pytest.param(["generate", "x", "--session", "nope", "--storage", "{storage}"],
                 ["no session 'nope'", "--storage it was trained with"], id="generate: no such session"),
    pytest.param(on_new("generate", "x"), ["no committed checkpoint or snapshot yet"],
                 id="generate: untrained session"),
    pytest.param(["generate", "x", "--session", "s", "--storage", "{file}"], ["cannot use session storage"],
                 id="generate: storage is a file"),
    pytest.param(["generate", "x", "--session", "s", "--storage", "nosuch://bucket"],
                 ["cannot use session storage 'nosuch://bucket'"], id="generate: unknown storage protocol"),
    pytest.param(on_new("generate", "x", "--count", "0"), ["--count", "greater than or equal to 1"],
                 id="generate --count 0"),
    pytest.param(on_new("generate", "x", "--width", "100"), ["--width", "multiple of 8"],
                 id="generate --width 100"),
    pytest.param(on_new("generate", " "), ["no committed checkpoint"],
                 id="generate: a blank prompt, untrained"),
    # evaluate
    pytest.param(["evaluate", "--session", "nope", "--storage", "{storage}"], ["no session 'nope'"],
                 id="evaluate: no such session"),
    pytest.param(on_new("evaluate", "--judges", "tiny"), ["no prepared photos", "dreambooth train"],
                 id="evaluate: untrained session"),
    pytest.param(on_new("evaluate", "--steps", "abc"), ["--steps 'abc'", "separated by commas"],
                 id="evaluate --steps abc"),
    pytest.param(on_new("evaluate", "--steps", "3"), ["no committed checkpoint or snapshot yet"],
                 id="evaluate --steps 3, untrained"),
    pytest.param(on_new("evaluate", "--images", "0"), ["--images 0", "greater than or equal to 1"],
                 id="evaluate --images 0"),
    # export
    pytest.param(["export", "--session", "nope", "--step", "2", "--storage", "{storage}"],
                 ["no session 'nope'"], id="export: no such session"),
    pytest.param(on_new("export", "--step", "2"), ["no committed checkpoint or snapshot yet"],
                 id="export: untrained session"),
    pytest.param(["export", "--session", "s", "--step", "2", "--storage", "{file}"],
                 ["cannot use session storage"], id="export: storage is a file"),
    # status
    pytest.param(["status", "nope", "--storage", "{storage}"], ["no session 'nope'", "Sessions there: new"],
                 id="status: no such session"),
    pytest.param(["status", "--storage", "{file}"],
                 ["cannot read session storage", "is a file, not a folder"], id="status: storage is a file"),
    pytest.param(["status", "--storage", "nosuch://bucket"],
                 ["cannot read session storage 'nosuch://bucket'"], id="status: unknown storage protocol"),
    # upload
    pytest.param(["upload", "--session", "u", "--storage", "{storage}"], ["upload needs --photos"],
                 id="upload without --photos"),
    pytest.param(["upload", "--session", "u", "--storage", "{storage}", "--photos", "{tmp}/nope"],
                 ["nope", "does not exist"], id="upload: no such photos folder"),
    pytest.param(["upload", "--session", "u", "--storage", "{storage}", "--photos", "{photos}"],
                 [NO_SERVER, "no training run is triggered"], id="upload with PREFECT_API_URL down"),
]


@pytest.mark.parametrize("argv, phrases", ROWS)
def test_a_mistake_is_one_error_paragraph(places, argv, phrases, capsys):
    code = main([arg.format(**places) for arg in argv])
    error = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, error
    assert error.startswith("error: ") and error.count("error: ") == 1, error
    for phrase in phrases:
        assert phrase in error, error


def test_a_stale_profile_is_named_with_how_to_unset_it(places, tmp_path, monkeypatch, capsys):
    url = closed_port_url("/api")
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(f'active = "old"\n[profiles.old]\nPREFECT_API_URL = "{url}"\n')
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(profiles))
    assert main([arg.format(**places) for arg in train()]) == EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert f"PREFECT_API_URL is {url} (set in the Prefect profile 'old' ({profiles}))" in error
    assert "prefect config unset PREFECT_API_URL" in error


def test_upload_to_a_server_that_is_down_copies_nothing(places, capsys):
    argv = ["upload", "--session", "u", "--storage", places["storage"], "--photos", places["photos"]]
    assert main(argv) == EXIT_USER_ERROR
    assert not (Path(places["storage"]) / "u").exists()


def test_upload_fails_when_the_server_does_not_accept_the_event(places, monkeypatch, capsys):
    # A server that is up (it answers /health) but takes no events: the event is lost, so is the run.
    with FakeServer({"/api/health": b"true"}) as server:
        monkeypatch.setenv("PREFECT_API_URL", server.url("/api"))
        code = main(["upload", "--session", "u", "--storage", places["storage"], "--photos", places["photos"],
                     "--model", "tiny"])
    out, error = capsys.readouterr()
    assert code == EXIT_USER_ERROR, error
    assert "Sent the upload event" not in out
    assert error.startswith("error: the photos are in session 'u', but the Prefect server at") and \
        "did not accept the event" in error and "dreambooth train --session u" in error, error
    assert len(list((Path(places["storage"]) / "u" / "photos").iterdir())) == 4  # kept for the next try


def test_a_memory_storage_warns_once_that_its_session_ends_with_the_process(places, capsys):
    missing = places["tmp"] + "/nope"
    assert main(["train", "--session", "s", "--storage", "memory://", "--photos", missing]) == EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert error.count("warning: --storage memory:// keeps the session in this process's memory") == 1
    assert error.count("error: ") == 1 and "nope" in error


def test_a_model_cache_that_is_a_file_is_named_before_anything_runs(places, monkeypatch, capsys):
    monkeypatch.setenv("DREAMBOOTH_CACHE", places["file"])
    for argv in (train(), ["tokens", "shrk", "--model", "tiny"]):
        assert main([arg.format(**places) for arg in argv]) == EXIT_USER_ERROR
        error = capsys.readouterr().err
        assert error == (f"error: DREAMBOOTH_CACHE={places['file']} is a file, not a folder. Set "
                         "DREAMBOOTH_CACHE to a folder this user can write to (it is made if missing), or "
                         "unset it to use ~/.cache/dreambooth.\n")
    monkeypatch.setenv("DREAMBOOTH_CACHE", places["file"] + "/models")
    assert main([arg.format(**places) for arg in train()]) == EXIT_USER_ERROR
    assert f"is not a folder ({places['file']} is a file)" in capsys.readouterr().err


# --- rows that need a process bound by file permissions (the tests may run as root) ----------

def dreambooth(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": closed_port_url("/api"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, preexec_fn=bound_by_permissions())


def assert_one_paragraph(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("error: ") and result.stderr.count("error: ") == 1, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def test_a_model_cache_this_user_cannot_write_is_named(places, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    deny_reading(cache)
    try:
        result = dreambooth(*[arg.format(**places) for arg in train()], env={"DREAMBOOTH_CACHE": str(cache)})
    finally:
        cache.chmod(0o755)
    assert_one_paragraph(result, f"DREAMBOOTH_CACHE={cache} cannot hold files (Permission denied)")


@pytest.mark.parametrize("argv", [train(), on_new("export", "--step", "2"), on_new("generate", "x"),
                                  on_new("evaluate")], ids=lambda argv: argv[0])
def test_a_read_only_session_folder_is_named_before_anything_runs(places, argv):
    session = Path(places["storage"]) / ("s" if argv[0] == "train" else "new")
    opened_session(session.parent, session.name, model="tiny")
    before = sorted(p.name for p in session.iterdir())
    deny_writing(session)
    try:
        result = dreambooth(*[arg.format(**places) for arg in argv])
    finally:
        session.chmod(0o755)
    assert_one_paragraph(result, f"writing into the session folder {session} failed (Permission denied)",
                         "chmod -R u+w the session folder", "run the same command again")
    assert sorted(p.name for p in session.iterdir()) == before


# --- rows on a trained session, and whole runs: the full suite only ---------------------------

@pytest.fixture(scope="module")
def trained(prefect_api_url, tmp_path_factory) -> str:
    """A storage holding session 't', trained to step 4 with checkpoints at 2 and 4."""
    root = tmp_path_factory.mktemp("trained")
    photos = str(REPO / "examples" / "photos")
    assert main(["train", "--session", "t", "--storage", str(root), "--photos", photos, "--model", "tiny",
                 "--steps", "4", "--chunk-steps", "2", "--sample-every", "0"]) == 0
    return str(root)


def on_trained(command: str, *extra: str) -> list[str]:
    return [command, "--session", "t", "--storage", "{trained}", *extra]


STEPS_THERE = "Steps there are: 2 (checkpoint), 4 (checkpoint)"
TRAINED_ROWS = [
    pytest.param(on_trained("generate", "x", "--step", "3"),
                 ["no checkpoint or snapshot at step 3", STEPS_THERE, "as --step."], id="generate --step 3"),
    pytest.param(on_trained("generate", "x", "--step", "-1"), ["at step -1", STEPS_THERE],
                 id="generate --step -1"),
    pytest.param(on_trained("export", "--step", "3"), ["at step 3", STEPS_THERE, "as --step."],
                 id="export --step 3"),
    pytest.param(on_trained("evaluate", "--steps", "2,3", "--judges", "tiny"), ["at step 3", "as --steps."],
                 id="evaluate --steps 2,3"),
    pytest.param(on_trained("generate", "x"), [NO_SERVER, "temporary server of its own"],
                 id="generate with PREFECT_API_URL down"),
    pytest.param(on_trained("generate", "x", "--device", "banana"), ["--device 'banana' is not a device"],
                 id="generate --device banana on a trained session"),
]


@pytest.mark.slow
@pytest.mark.parametrize("argv, phrases", TRAINED_ROWS)
def test_a_mistake_on_a_trained_session_is_one_error_paragraph(trained, places, argv, phrases, capsys):
    code = main([arg.format(trained=trained, **places) for arg in argv])
    error = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, error
    assert error.startswith("error: ") and error.count("error: ") == 1, error
    for phrase in phrases:
        assert phrase in error, error


@pytest.mark.slow
def test_upload_with_other_training_settings_than_the_trained_session(trained, places, monkeypatch, capsys):
    monkeypatch.delenv("PREFECT_API_URL")  # no server: the photos would only be copied
    code = main(["upload", "--session", "t", "--storage", trained, "--photos", places["photos"],
                 "--learning-rate", "1"])
    assert code == EXIT_USER_ERROR
    assert "session 't' was trained with different settings: learning_rate" in capsys.readouterr().err


@pytest.mark.slow
def test_photos_named_only_with_emoji_train_under_the_token_flag(prefect_api_url, tmp_path, photos, capsys):
    emoji = tmp_path / "emoji"
    emoji.mkdir()
    for number, photo in enumerate(sorted(photos.iterdir()), 1):
        shutil.copy(photo, emoji / f"🐶 ({number}).jpg")
    assert main(["train", "--session", "dog", "--storage", str(tmp_path / "sessions"), "--photos", str(emoji),
                 "--token", "ohwx", "--model", "tiny", "--steps", "2", "--sample-every", "0"]) == 0, \
        capsys.readouterr().err
    manifest = json.loads((tmp_path / "sessions" / "dog" / "dataset" / "manifest.json").read_text())
    assert {item["caption"] for item in manifest["items"]} == {"photo of ohwx"}


@pytest.mark.slow
def test_a_storage_that_turns_read_only_mid_run_keeps_what_was_committed(prefect_api_url, tmp_path):
    import threading

    import safetensors.torch
    from filesystems import set_read_only, small_tmpfs

    args = ["train", "--session", "s", "--model", "tiny", "--photos", str(REPO / "examples" / "photos"),
            "--steps", "6", "--chunk-steps", "2", "--sample-every", "0"]
    env = {"PREFECT_API_URL": prefect_api_url}

    def weights(session: Path) -> dict:
        return safetensors.torch.load_file(session / "checkpoints" / "step-000006" / "weights.safetensors")

    with small_tmpfs(tmp_path / "disk", "200m") as disk:
        if disk is None:
            pytest.skip("cannot mount a tmpfs here to turn read-only")
        first = disk / "s" / "checkpoints" / "step-000002" / "MANIFEST.json"
        stop = threading.Event()

        def read_only_after_the_first_commit() -> None:
            while not stop.is_set() and not first.exists():
                stop.wait(0.01)
            if first.exists():
                set_read_only(disk, True)
        watcher = threading.Thread(target=read_only_after_the_first_commit)
        watcher.start()
        try:
            result = dreambooth(*args, "--storage", str(disk), env=env)
        finally:
            stop.set()
            watcher.join()
        assert result.returncode == EXIT_USER_ERROR, result.stderr[-3000:]
        assert "Traceback" not in result.stderr + result.stdout
        error = result.stderr[result.stderr.index("\nerror: ") + 1:]  # after the run's log lines
        assert error.count("\n") == 1, error
        for phrase in (f"cannot write to the session storage '{disk}'", "(Read-only file system)",
                       "remount it read-write", "everything committed before is kept"):
            assert phrase in error, error
        assert (disk / "s" / "checkpoints" / "step-000002" / "MANIFEST.json").exists()

        set_read_only(disk, False)
        again = dreambooth(*args, "--storage", str(disk), env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        reference = dreambooth(*args, "--storage", str(tmp_path / "reference"), env=env)
        assert reference.returncode == 0, reference.stderr[-3000:]
        expected, resumed = weights(tmp_path / "reference" / "s"), weights(disk / "s")
        assert all(torch.equal(expected[name], resumed[name]) for name in expected)
