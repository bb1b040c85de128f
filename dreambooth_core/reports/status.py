"""A session's state read from its storage alone (no Prefect): steps, checkpoints, outputs; and the
Markdown summary of a finished flow run."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from datetime import datetime, timezone

import fsspec

from dreambooth_core.config import SESSION_NAME
from dreambooth_core.errors import DreamBoothError, StorageError
from dreambooth_core.reports.loss_log import read_loss_rows
from dreambooth_core.reports.monitor import duration_text
from dreambooth_core.reports.timing import training_speed
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.dataset_manifest import load_dataset_manifest
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import (
    DIFFUSERS,
    EXPORTS,
    GENERATIONS,
    SESSION_FILE,
    SNAPSHOTS,
    steps_named,
)
from dreambooth_core.session.publications import load_publications
from dreambooth_core.session.state import SessionState, load_state


@dataclass(frozen=True)
class SessionStatus:
    name: str
    location: str
    state: str                   # "new", "partly trained", "trained, not exported", "complete"
    model: str | None
    photos: int | None
    subjects: list[str]
    total_steps: int | None
    committed: list[int]         # steps with a committed checkpoint, oldest first
    committed_at: float | None   # when the latest one was committed (epoch seconds)
    last_logged_step: int | None
    last_loss: float | None
    speed: float | None          # training steps per second over all recorded chunks
    outputs: dict[str, int] = field(default_factory=dict)  # session-relative path -> bytes
    snapshots: list[int] = field(default_factory=list)  # steps with a snapshot, oldest first
    # steps exported with `dreambooth export --step`
    exports: list[int] = field(default_factory=list)
    # folders of `dreambooth generate`, oldest first
    generations: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)  # "URL (step N[, private])" per hub repo
    problem: str | None = None   # why the session cannot be read (state "unreadable")

    @property
    def latest_step(self) -> int:
        return self.committed[-1] if self.committed else 0


def list_sessions(storage: str, options: dict | None = None) -> list[str]:
    """Names of the sessions in `storage` (folders holding a session.json); [] if it is empty
    or does not exist yet. Creates nothing."""
    try:
        fs, root = fsspec.core.url_to_fs(storage, **(options or {}))
        root = root.rstrip("/")
        if not fs.isdir(root):
            if fs.isfile(root):
                raise NotADirectoryError(f"{root} is a file, not a folder")
            return []
        folders = [p for p in fs.ls(root, detail=True) if p["type"] == "directory"]
        names = (posixpath.basename(p["name"].rstrip("/")) for p in folders)
        return sorted(n for n in names if SESSION_NAME.match(n) and fs.exists(f"{root}/{n}/{SESSION_FILE}"))
    except Exception as exc:  # fsspec raises many types for one meaning
        raise StorageError(f"cannot read session storage {storage!r}: {type(exc).__name__}: "
                           f"{exc}. Check the path and credentials, or pass another --storage.") from exc


def read_statuses(storage: str, names: list[str],
                  options: dict | None = None) -> list[SessionStatus]:
    """The status of each named session; one that cannot be read is listed as "unreadable",
    with the reason, instead of hiding the others."""
    statuses = []
    for name in names:
        try:
            statuses.append(session_status(Session(storage, name, options)))
        except (DreamBoothError, OSError, ValueError) as exc:  # damaged files, no permission...
            statuses.append(unreadable_status(storage, name, exc))
    return statuses


def unreadable_status(storage: str, name: str, exc: Exception) -> SessionStatus:
    if isinstance(exc, DreamBoothError):
        problem = str(exc)
    elif isinstance(exc, OSError):
        problem = f"cannot read it: {exc.strerror or exc}"
    else:  # a damaged file a lower layer did not explain: its first line
        problem = f"cannot read it: {str(exc).splitlines()[0]}"
    return SessionStatus(name=name, location=f"{storage.rstrip('/')}/{name}", state="unreadable",
                         model=None, photos=None, subjects=[], total_steps=None, committed=[],
                         committed_at=None, last_logged_step=None, last_loss=None, speed=None,
                         problem=problem)


def session_status(session: Session) -> SessionStatus:
    state = load_state(session)
    manifest = load_dataset_manifest(session)
    store = CheckpointStore(session)
    committed = store.committed_steps()
    rows = read_loss_rows(session)
    steps, seconds = training_speed(session)
    total = state.total_steps if state else None
    model = None
    if state:
        base = state.config.base_model
        model = f"{base.model}@{base.revision}" if base.revision else base.model
    latest = store.manifest(committed[-1]) if committed else None
    return SessionStatus(
        name=session.name, location=session.url, state=_state(state, committed, total),
        model=model, photos=len(manifest.items) if manifest else None,
        subjects=sorted(manifest.subjects) if manifest else [], total_steps=total,
        committed=committed,
        committed_at=latest.committed_at if latest else None,
        last_logged_step=rows[-1].step if rows else None,
        last_loss=rows[-1].loss if rows else None,
        speed=steps / seconds if seconds > 0 else None, outputs=_outputs(session, state),
        snapshots=steps_named(session.list(SNAPSHOTS)), exports=steps_named(session.list(EXPORTS)),
        generations=session.list(GENERATIONS), published=_published(session))


def _published(session: Session) -> list[str]:
    repos = load_publications(session).repos.values()
    return [f"{p.url} (step {p.step}{', private' if p.private else ''}, "
            f"{time_text(p.published_at)})"
            for p in sorted(repos, key=lambda p: p.repo)]


def _state(state: SessionState | None, committed: list[int], total: int | None) -> str:
    latest = committed[-1] if committed else 0
    if state is None or total is None:
        return "new"
    if latest < total:
        return "partly trained"
    if state.status == "complete" and state.export and state.export.step == total:
        return "complete"
    return "trained, not exported"


def _outputs(session: Session, state: SessionState | None) -> dict[str, int]:
    recorded = state.outputs if state else {}
    outputs = {path: session.size(path) for path in recorded if session.exists(path)}
    if session.exists(DIFFUSERS):
        outputs[f"{DIFFUSERS}/"] = session.fs.du(session.path(DIFFUSERS))
    return outputs


def size_text(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def time_text(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def status_lines(status: SessionStatus) -> list[str]:
    """The detailed view of one session."""
    total = status.total_steps if status.total_steps is not None else "?"
    lines = [f"Session {status.name}: {status.state}", f"  location:    {status.location}"]
    if status.model:
        lines.append(f"  base model:  {status.model}")
    if status.photos is not None:
        subjects = f" (tokens: {', '.join(status.subjects)})" if status.subjects else ""
        lines.append(f"  photos:      {status.photos}{subjects}")
    lines.append(f"  steps:       {status.latest_step} of {total} committed")
    if status.committed:
        lines.append(f"  checkpoint:  step {status.latest_step}, committed "
                     f"{time_text(status.committed_at)} (kept: "
                     f"{', '.join(map(str, status.committed))})")
    if status.last_logged_step is not None:
        lines.append(f"  loss:        {status.last_loss:.4f} at step {status.last_logged_step}")
    if status.speed:
        lines.append(f"  speed:       {status.speed:.2f} steps/s")
    if status.snapshots:
        lines.append(f"  snapshots:   steps {', '.join(map(str, status.snapshots))}")
    for path, size in status.outputs.items():
        lines.append(f"  output:      {path} ({size_text(size)})")
    if status.exports:
        lines.append(f"  exported:    steps {', '.join(map(str, status.exports))} in exports/ "
                     "(dreambooth export --step N)")
    if status.generations:
        lines.append(f"  generated:   {len(status.generations)} time(s) in generations/, newest "
                     f"{status.generations[-1]}/ (dreambooth generate)")
    lines += [f"  published:   {where}" for where in status.published]
    return lines


def status_table(statuses: list[SessionStatus]) -> list[str]:
    """One line per session."""
    header = ("session", "state", "steps", "checkpoint", "outputs")
    rows = [(s.name, s.state, "-", "-", "-") if s.problem else
            (s.name, s.state,
             f"{s.latest_step}/{s.total_steps if s.total_steps is not None else '?'}",
             f"step {s.latest_step}" if s.committed else "-",
             ", ".join(f"{p} ({size_text(n)})" for p, n in s.outputs.items()) or "-")
            for s in statuses]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    problems = [f"{s.name}: {s.problem}" for s in statuses if s.problem]
    return lines + (["", "Unreadable sessions:", *problems] if problems else [])


# The Markdown summary of a finished flow run.
@dataclass(frozen=True)
class RunFacts:
    """What only the flow run knows."""
    seconds: float        # wall time of this run
    trained_steps: int    # steps trained in this run (not cached, not committed before)
    chunks: int
    cached_chunks: int


def summary_markdown(status: SessionStatus, run: RunFacts) -> str:
    total = status.total_steps if status.total_steps is not None else "?"
    subjects = ", ".join(f"`{s}`" for s in status.subjects) or "-"
    speed = f"{status.speed:.2f} steps/s" if status.speed else "-"
    run_speed = (f"{run.trained_steps / run.seconds:.2f} steps/s including loading and export"
                 if run.trained_steps and run.seconds > 0 else "nothing trained in this run")
    rows = [
        ("Session", f"`{status.name}` ({status.state})"),
        ("Location", f"`{status.location}`"),
        ("Base model", f"`{status.model}`" if status.model else "-"),
        ("Photos", str(status.photos) if status.photos is not None else "-"),
        ("Tokens", subjects),
        ("Steps", f"{status.latest_step} of {total} committed; {run.trained_steps} trained in this "
                  f"run ({run.chunks - run.cached_chunks} of {run.chunks} chunks ran, "
                  f"{run.cached_chunks} cached)"),
        ("Time", f"{duration_text(run.seconds)} for this run"),
        ("Speed", f"{speed} training; {run_speed}"),
    ]
    if status.last_loss is not None:
        rows.append(("Last loss", f"{status.last_loss:.4f} at step {status.last_logged_step}"))
    lines = [f"# DreamBooth session {status.name}", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines += ["", "## Output files", "", "| file | size | location |", "|---|---|---|"]
    lines += [f"| `{path}` | {size_text(size)} | `{status.location}/{path}` |"
              for path, size in status.outputs.items()] or ["| (none) | | |"]
    return "\n".join(lines) + "\n"
