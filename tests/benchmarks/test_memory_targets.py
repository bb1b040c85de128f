"""The [lowvram] targets table: the plan --memory auto picks on a card of each target's size (no timing asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "memory_targets.py"


def table(text: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in `text` whose header starts with 'target', by header."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| target"))
    header = [cell.strip() for cell in lines[start].split("|")[1:-1]]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("| "):
            break
        rows.append(dict(zip(header, (cell.strip() for cell in line.split("|")[1:-1]))))
    return rows


@pytest.mark.slow  # the full SD 1.5 architecture on fake tensors, a few plans (about a minute)
def test_sd15_defaults_stay_on_a_t4_with_room_on_the_host():
    result = subprocess.run([sys.executable, str(SCRIPT), "--targets", "sd15-t4"], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    [row] = table(result.stdout)
    assert row["card (usable GiB)"].startswith("T4 16 GB") and row["met"] == "yes"
    assert float(row["GPU peak GiB"]) <= 15 and row["frozen base"] == "fp16"  # nothing quantised: DreamBooth
    assert row["12.7 GB VM"] == "yes"


def test_benchmarks_md_holds_every_target_with_the_scripts_columns():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from memory_targets import HEADER, TARGETS

    text = (REPO / "BENCHMARKS.md").read_text()
    assert HEADER in text and "python benchmarks/memory_targets.py" in text
    titles = [row["target (batch 1, class images)"] for row in table(text[text.index(HEADER):])]
    assert titles == [target.title for target in TARGETS.values()]
