"""A full disk during a run, as a user meets it: one `error:` paragraph, exit 2, the committed
checkpoints kept, and once there is room the same command ends with the exact model."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from filesystems import resize, small_tmpfs

from flows.cli import EXIT_USER_ERROR

pytestmark = pytest.mark.slow  # CLI runs with Prefect

REPO = Path(__file__).resolve().parents[2]
# A checkpoint of the tiny model is ~10 MB (fp32 weights and AdamW moments), its outputs ~6.5 MB.
ARGS = ["--session", "s", "--model", "tiny", "--steps", "4", "--chunk-steps", "2",
        "--learning-rate", "1e-4", "--sample-every", "0"]


def train(api_url: str, storage: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "flows.cli", "train", *ARGS, "--storage", str(storage),
                           "--photos", str(REPO / "examples" / "photos")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(prefect_api_url, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    assert train(prefect_api_url, root / "sessions", root).returncode == 0
    return root / "sessions" / "s"


def weights(session: Path, step: int) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(session / "checkpoints" / f"step-{step:06d}" / "weights.safetensors")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("size, kept", [("16m", [2]), ("22m", [2, 4])])  # the 2nd commit; the export
def test_no_space_left_then_room_again_ends_with_the_exact_model(prefect_api_url, reference, tmp_path,
                                                                  size, kept):
    with small_tmpfs(tmp_path / "disk", size) as disk:
        if disk is None:
            pytest.skip("cannot mount a small tmpfs here; tests/session/test_disk_full.py injects ENOSPC")
        result = train(prefect_api_url, disk, tmp_path)
        assert result.returncode == EXIT_USER_ERROR, result.stderr[-3000:]
        assert "Traceback" not in result.stderr + result.stdout
        error = result.stderr[result.stderr.index("error: "):]
        assert "no space left on the session storage" in error and "run the same command again" in error
        session = disk / "s"
        assert sorted(int(p.name[5:]) for p in (session / "checkpoints").glob("step-*")) == kept
        assert not list(session.glob("**/*.tmp-*")) and not list(session.glob("s.*"))  # nothing half-written

        resize(disk, "48m")
        again = train(prefect_api_url, disk, tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        expected, actual = weights(reference, 4), weights(session, 4)
        assert all(torch.equal(expected[k], actual[k]) for k in expected)
        assert sha256(session / "s.safetensors") == sha256(reference / "s.safetensors")
        assert not list(session.glob("*.tmp-*"))
