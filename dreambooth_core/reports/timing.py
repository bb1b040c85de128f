"""reports/timing.json: how long each trained chunk took, for speed in summaries and status."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import TIMING_JSON


class ChunkTime(BaseModel):
    model_config = ConfigDict(frozen=True)
    start: int
    end: int
    seconds: float
    finished_at: float


class ChunkTimes(BaseModel):
    model_config = ConfigDict(frozen=True)
    chunks: dict[str, ChunkTime] = Field(default_factory=dict,
                                         description="Chunk end step (as text) -> time.")


def read_chunk_times(session: Session) -> ChunkTimes:
    """The recorded times; none when there is no (readable) file yet."""
    if not session.exists(TIMING_JSON):
        return ChunkTimes()
    try:
        return ChunkTimes.model_validate(session.read_json(TIMING_JSON))
    except (ValueError, ValidationError):
        return ChunkTimes()


def record_chunk_time(session: Session, start: int, end: int, seconds: float) -> None:
    chunks = read_chunk_times(session).chunks | {
        str(end): ChunkTime(start=start, end=end, seconds=round(seconds, 3),
                            finished_at=time.time())}
    session.write_json(TIMING_JSON, ChunkTimes(chunks=chunks).model_dump())


def training_speed(session: Session) -> tuple[int, float]:
    """(steps, seconds) over every recorded chunk."""
    chunks = read_chunk_times(session).chunks.values()
    return sum(c.end - c.start for c in chunks), sum(c.seconds for c in chunks)


def estimate_text(seconds: float) -> str:
    """'40 s', '12 minutes', '3.5 hours': a duration as an estimate is told (a measured one:
    monitor.duration_text)."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"
