"""reports/loss.csv: the training loss of every step, as `step,loss,learning_rate`.

`step` counts completed optimisation steps (1 is the first). Losses are written
with Python's shortest exact float text, so a resumed run, whose losses are
bit-identical, leaves the same file as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
from typing import NamedTuple

from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import LOSS_CSV

HEADER = ("step", "loss", "learning_rate")


class LossRow(NamedTuple):
    step: int
    loss: float
    learning_rate: float | None = None


def read_loss_rows(session: Session) -> list[LossRow]:
    """The recorded rows, or [] when there is no (readable) log yet."""
    if not session.exists(LOSS_CSV):
        return []
    rows = []
    for record in csv.DictReader(io.StringIO(session.read_bytes(LOSS_CSV).decode())):
        try:
            rate = record.get("learning_rate") or None
            rows.append(LossRow(int(record["step"]), float(record["loss"]),
                                float(rate) if rate else None))
        except (KeyError, TypeError, ValueError):
            continue  # a damaged line: the plot and status do without it
    return rows


def loss_csv_text(rows: list[LossRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow((row.step, repr(row.loss),
                         "" if row.learning_rate is None else repr(row.learning_rate)))
    return out.getvalue()


class LossLog:
    """The session's loss log, held in memory and rewritten whole (atomically) on flush."""

    def __init__(self, session: Session):
        self.session = session
        self.rows = read_loss_rows(session)

    def restart_after(self, step: int) -> None:
        """Forget rows past `step`: training resumes there and will record them again."""
        self.rows = [row for row in self.rows if row.step <= step]

    def extend(self, rows: list[LossRow]) -> None:
        if rows:
            self.restart_after(rows[0].step - 1)
        self.rows.extend(rows)

    def flush(self) -> None:
        self.session.write_bytes(LOSS_CSV, loss_csv_text(self.rows).encode())
