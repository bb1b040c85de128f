"""A session's state from its storage alone: steps, checkpoints, loss, outputs."""

import json

import pytest
from sessions import opened_session

from dreambooth_core.errors import StorageError
from dreambooth_core.reports.loss_log import LossLog, LossRow
from dreambooth_core.reports.status import list_sessions, read_statuses, session_status, status_lines, status_table
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.session.state import update_state


def export(step: int) -> dict:
    return {"fingerprint": "f", "step": step, "precision": "fp16"}


def partly_trained(storage: str, name: str = "shrk") -> Session:
    session = opened_session(storage, name, model="org/model", revision="v1")
    update_state(session, status="new", total_steps=10)
    store = CheckpointStore(session)
    for step in (2, 4):
        store.save(step, {"unet.safetensors": lambda f: f.write(b"w" * 100)}, meta={})
    log = LossLog(session)
    log.extend([LossRow(step, 1.0 / step, 1e-6) for step in range(1, 6)])
    log.flush()
    return session


def test_a_partly_trained_session_shows_its_committed_steps_and_latest_loss(tmp_path):
    status = session_status(partly_trained(str(tmp_path)))
    assert status.state == "partly trained"
    assert (status.latest_step, status.total_steps, status.committed) == (4, 10, [2, 4])
    assert (status.last_logged_step, status.last_loss) == (5, 0.2)
    assert status.model == "org/model@v1" and status.committed_at is not None
    lines = "\n".join(status_lines(status))
    assert "steps:       4 of 10 committed" in lines and "checkpoint:  step 4, committed 20" in lines
    assert "loss:        0.2000 at step 5" in lines


def test_a_corrupt_latest_checkpoint_does_not_count(tmp_path):
    session = partly_trained(str(tmp_path))
    (tmp_path / "shrk" / "checkpoints" / "step-000004" / "unet.safetensors").write_bytes(b"short")
    assert session_status(session).latest_step == 2


def test_a_complete_session_lists_its_outputs_with_sizes(tmp_path):
    session = partly_trained(str(tmp_path))
    CheckpointStore(session).save(10, {"unet.safetensors": lambda f: f.write(b"w")}, meta={})
    session.write_bytes("shrk.safetensors", b"x" * 2_500_000)
    session.write_bytes("diffusers/unet/model.safetensors", b"y" * 1500)
    update_state(session, status="complete", export=export(10), outputs={"shrk.safetensors": 2_500_000})
    status = session_status(session)
    assert status.state == "complete"
    assert status.outputs == {"shrk.safetensors": 2_500_000, "diffusers/": 1500}
    table = status_table([status])
    assert table[0].split() == ["session", "state", "steps", "checkpoint", "outputs"]
    assert table[1].split()[:4] == ["shrk", "complete", "10/10", "step"]
    assert "shrk.safetensors (2.5 MB), diffusers/ (1.5 KB)" in table[1]


def test_a_session_trained_further_is_complete_again_only_after_its_export(tmp_path):
    session = partly_trained(str(tmp_path))
    update_state(session, status="complete", export=export(4), total_steps=4)
    assert session_status(session).state == "complete"
    update_state(session, total_steps=10)  # trained further: 10 steps are asked for now
    assert session_status(session).state == "partly trained"
    CheckpointStore(session).save(10, {"unet.safetensors": lambda f: f.write(b"w")}, meta={})
    assert session_status(session).state == "trained, not exported"


def test_sessions_are_the_folders_with_a_session_file(tmp_path):
    partly_trained(str(tmp_path), "b")
    partly_trained(str(tmp_path), "a")
    (tmp_path / "not-a-session").mkdir()
    assert list_sessions(str(tmp_path)) == ["a", "b"]
    assert list_sessions(str(tmp_path / "missing")) == []
    assert not (tmp_path / "missing").exists()  # looking creates nothing


def test_an_unreadable_storage_is_a_clear_error(tmp_path):
    with pytest.raises(StorageError, match="cannot read session storage 'nosuchproto://x'"):
        list_sessions("nosuchproto://x")


@pytest.mark.slow  # the storage block lives on a Prefect server
def test_status_finds_sessions_through_a_storage_block(prefect_api_url, tmp_path, capsys):
    from blocks import SessionStorage
    from flows.cli import main

    partly_trained(str(tmp_path / "elsewhere"))
    SessionStorage(url=str(tmp_path / "elsewhere")).save("status-store", overwrite=True)
    assert main(["status", "--storage-block", "status-store", "shrk"]) == 0
    assert "4 of 10 committed" in capsys.readouterr().out
    assert main(["status", "--storage-block", "status-store"]) == 0
    assert "shrk" in capsys.readouterr().out


def test_a_damaged_session_is_listed_with_the_reason_and_the_others_still_show(tmp_path, capsys):
    from flows.cli import EXIT_USER_ERROR, main

    partly_trained(str(tmp_path), "a")
    partly_trained(str(tmp_path), "c")
    opened_session(str(tmp_path), "b")
    (tmp_path / "b" / "session.json").write_text('{"format": 2, "config": {"sess')  # cut short
    statuses = read_statuses(str(tmp_path), list_sessions(str(tmp_path)))
    assert [(s.name, s.state) for s in statuses] == [("a", "partly trained"), ("b", "unreadable"),
                                                     ("c", "partly trained")]
    assert "session.json is not valid JSON" in statuses[1].problem

    assert main(["status", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[1:4]] == [["a", "partly"], ["b", "unreadable"], ["c", "partly"]]
    assert out[-2] == "Unreadable sessions:" and out[-1].startswith("b: ")
    assert "Restore it from a backup" in out[-1]

    assert main(["status", "--storage", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [s["state"] for s in listed] == ["partly trained", "unreadable", "partly trained"]

    assert main(["status", "b", "--storage", str(tmp_path)]) == EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert error.startswith("error: session 'b' cannot be read: ") and "not valid JSON" in error


def test_a_session_in_a_folder_the_storage_uses_itself_is_marked(tmp_path):
    opened_session(str(tmp_path), "a")
    (tmp_path / "a").rename(tmp_path / "class-images")  # written by a version that allowed the name
    [status] = read_statuses(str(tmp_path), list_sessions(str(tmp_path)))
    assert status.state == "unreadable" and "is reserved" in status.problem
