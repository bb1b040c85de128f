"""The Markdown summary of a finished flow run."""

from __future__ import annotations

from dataclasses import dataclass

from dreambooth_core.reports.monitor import duration_text
from dreambooth_core.reports.status import SessionStatus, size_text


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
