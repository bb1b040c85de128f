"""reports/timing.json: how long each trained chunk took, for speed in summaries and status."""

from __future__ import annotations

import time

from tasks.session import Session

TIMING_JSON = "reports/timing.json"


def read_chunk_times(session: Session) -> dict[str, dict]:
    """{chunk end step (as text): {"start", "end", "seconds", "finished_at"}}."""
    if not session.exists(TIMING_JSON):
        return {}
    try:
        return session.read_json(TIMING_JSON).get("chunks", {})
    except (ValueError, AttributeError):
        return {}


def record_chunk_time(session: Session, start: int, end: int, seconds: float) -> None:
    chunks = read_chunk_times(session)
    chunks[str(end)] = {"start": start, "end": end, "seconds": round(seconds, 3),
                        "finished_at": time.time()}
    session.write_json(TIMING_JSON, {"chunks": chunks})


def training_speed(session: Session) -> tuple[int, float]:
    """(steps, seconds) over every recorded chunk."""
    chunks = read_chunk_times(session).values()
    return sum(c["end"] - c["start"] for c in chunks), sum(c["seconds"] for c in chunks)
