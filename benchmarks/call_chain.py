"""How deep a checkpoint commit sits under the CLI, and how often a run opens its session:
the project's own frames from `dreambooth train` (the tiny model, one chunk) down to the commit
of the checkpoint's files, across the background commit thread ([simplify]: a newcomer should be
able to follow it), and how many times that run opened the session (each open lists the
storage: round trips on GCS) and read its session.json.

    python benchmarks/call_chain.py            # prints the frames and the counts

Wraps `CheckpointStore.save` (where every commit passes) to record the stack, and the call that
hands a commit to a thread, so the chain is joined at that hand-off; counts `Session._open` and
reads of session.json.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def project_frames() -> list[str]:
    frames = [f for f in traceback.extract_stack()[:-2] if f.filename.startswith(str(REPO))]
    return [f"{Path(f.filename).relative_to(REPO)}:{f.name}" for f in frames
            if ".venv" not in f.filename and "benchmarks/" not in f.filename]


def record_chain() -> list[list[str]]:
    """Patch the commit and the hand-off to a thread; returns where their stacks go."""
    from dreambooth_core.session.checkpoints import CheckpointStore

    chains: list[list[str]] = []
    handed: dict[int, list[str]] = {}
    save, start = CheckpointStore.save, threading.Thread.start

    def recording_save(self, *args, **kwargs):
        chains.append(handed.get(threading.get_ident(), []) + project_frames())
        return save(self, *args, **kwargs)

    def recording_start(self):  # a thread's frames continue its starter's
        above = project_frames()
        run = self.run

        def run_with_origin():
            handed[threading.get_ident()] = above + [f"(thread {self.name})"]
            run()
        self.run = run_with_origin
        return start(self)

    CheckpointStore.save, threading.Thread.start = recording_save, recording_start
    return chains


def count_session_use() -> dict[str, int]:
    """Patch the session's open and reads; returns the counts as they grow."""
    from dreambooth_core.session.folder import Session
    from dreambooth_core.session.paths import SESSION_FILE

    counts = {"opens": 0, "session.json reads": 0}
    open_, read = Session._open, Session.read_bytes

    def counting_open(self, storage, name, options):
        counts["opens"] += name == "chain"
        return open_(self, storage, name, options)

    def counting_read(self, relative):
        counts["session.json reads"] += relative == SESSION_FILE
        return read(self, relative)

    Session._open, Session.read_bytes = counting_open, counting_read
    return counts


def main() -> int:
    chains, counts = record_chain(), count_session_use()
    from flows.cli import main as cli

    with tempfile.TemporaryDirectory() as storage:
        cli(["train", "--session", "chain", "--photos", str(REPO / "examples" / "photos"), "--storage", storage,
             "--model", "tiny", "--steps", "2", "--chunk-steps", "2"])
    chain = chains[0]
    print("\n".join(chain))
    frames = [f for f in chain if not f.startswith("(thread")]
    threads = len(chain) - len(frames)
    modules = len({f.split(":")[0] for f in frames})
    print(f"{len(frames)} project frames in {modules} modules, {threads} thread(s)")
    print(", ".join(f"{value} {name}" for name, value in counts.items()), "in the run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
