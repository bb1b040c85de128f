"""What a user watching a run sees: artifacts in Prefect, the loss log, `dreambooth status`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dreambooth_core.session.paths import LOSS_CSV
from flows.cli import main
from tasks.artifacts import artifact_key

pytestmark = pytest.mark.slow  # a CLI or Prefect run each: the full suite only

REPO = Path(__file__).resolve().parents[2]
STEPS, CHUNK = 8, 4


def artifacts(key: str) -> list:
    """Every version of an artifact, newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                     sort=ArtifactSort.CREATED_DESC)


@pytest.fixture(scope="module")
def session_dir(prefect_api_url, tmp_path_factory) -> Path:
    storage = tmp_path_factory.mktemp("watch") / "sessions"
    assert main(["train", "--session", "Watch", "--storage", str(storage), "--model", "tiny",
                 "--photos", str(REPO / "examples" / "photos"), "--steps", str(STEPS),
                 "--chunk-steps", str(CHUNK)]) == 0
    return storage / "Watch"


def test_every_step_has_its_loss_in_the_session(session_dir):
    lines = (session_dir / LOSS_CSV).read_text().splitlines()
    assert lines[0] == "step,loss,learning_rate"
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, STEPS + 1))
    with Image.open(session_dir / "reports" / "loss.png") as plot:
        assert (plot.format, plot.size) == ("PNG", (900, 450))


def test_progress_ends_at_100_percent(session_dir):
    progress = artifacts(artifact_key("training", "Watch"))
    assert len(progress) == 1 and progress[0].type == "progress"
    assert progress[0].data == 100.0 and "complete, 8/8 steps" in progress[0].description


def test_loss_plot_is_shown_after_each_chunk(session_dir):
    shown = artifacts(artifact_key("loss", "Watch"))
    assert [a.description for a in shown] == [f"Training loss of Watch, steps 1-{end} of {STEPS}"
                                              for end in (8, 4)]
    assert "](data:image/jpeg;base64," in shown[0].data


def test_summary_names_the_run_and_its_outputs(session_dir):
    summary = artifacts(artifact_key("summary", "Watch"))[0].data
    for expected in ("# DreamBooth session Watch", "| Base model | `tiny` |", "| Photos | 4 |",
                     "| Tokens | `shrk` |", "8 of 8 committed; 8 trained in this run",
                     f"`{session_dir}/Watch.safetensors`", "| `diffusers/` |"):
        assert expected in summary, expected
    assert "steps/s training" in summary


def test_contact_sheet_is_shown(session_dir):
    sheet = artifacts(artifact_key("contact-sheet", "Watch"))[0].data
    assert "4 photos, cropped square" in sheet and "](data:image/jpeg;base64," in sheet


def test_sample_grids_are_shown_after_each_chunk(session_dir):
    shown = artifacts(artifact_key("samples", "Watch"))
    assert [a.description for a in shown] == [f"Samples of session Watch at step {end}" for end in (8, 4)]
    assert "| 1 | photo of shrk |" in shown[0].data and "](data:image/jpeg;base64," in shown[0].data
    assert f"`{session_dir}/samples/step-000008.png`" in shown[0].data


def test_status_works_without_prefect(session_dir):
    """A subprocess in which importing prefect fails and PREFECT_API_URL leads nowhere."""
    code = ("import sys\n"
            "class NoPrefect:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'prefect': raise ImportError('prefect is blocked')\n"
            "sys.meta_path.insert(0, NoPrefect())\n"
            "from flows.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": "http://127.0.0.1:9/api"}

    def status(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, "status", *args, "--storage",
                               str(session_dir.parent)], env=env, capture_output=True, text=True,
                              timeout=120)

    listing = status()
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[1].split()[:4] == ["Watch", "complete", "8/8", "step"]
    detail = status("Watch")
    assert "steps:       8 of 8 committed" in detail.stdout
    assert "output:      Watch.safetensors (" in detail.stdout
    missing = status("Other")
    assert missing.returncode == 2 and "no session 'Other'" in missing.stderr
    assert "Traceback" not in missing.stderr
