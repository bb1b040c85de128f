"""Nothing is lost: a run killed at any instant, rerun, ends with the same model."""

import hashlib
import subprocess
from pathlib import Path

import pytest
import safetensors.torch
import torch
from run_cli import run_cli as run_killable

pytestmark = pytest.mark.slow  # a CLI or Prefect run each: the full suite only

REPO = Path(__file__).resolve().parents[2]
RUN_CLI = REPO / "tests" / "run_cli.py"
STEPS, CHUNK = 12, 4


def run_cli(api_url, cwd, *args, kill_at=None) -> subprocess.CompletedProcess:
    return run_killable(api_url, *args, kill_at=kill_at, cwd=cwd, timeout=300)


def train_args(storage, session, photos, steps=STEPS):
    return ["train", "--session", session, "--storage", str(storage), "--photos", str(photos),
            "--model", "tiny", "--steps", str(steps), "--chunk-steps", str(CHUNK),
            "--learning-rate", "1e-4", "--seed", "7"]


def final_unet(session_dir: Path, step: int = STEPS) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(session_dir / "checkpoints" / f"step-{step:06d}" / "weights.safetensors")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reference(prefect_api_url, tmp_path_factory):
    """An uninterrupted run, in a subprocess like the killed ones."""
    root = tmp_path_factory.mktemp("reference")
    photos = REPO / "examples" / "photos"
    result = run_cli(prefect_api_url, root, *train_args(root / "sessions", "ref", photos))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "sessions" / "ref"


def test_killed_runs_resume_to_the_uninterrupted_model(prefect_api_url, reference, tmp_path, photos):
    storage = tmp_path / "sessions"
    args = train_args(storage, "ref", photos)
    # (where this run is killed, the checkpoint it must resume from)
    runs = [
        ("step:6", None),                 # mid-training, in chunk 2 (chunk 1 committed at step 4)
        ("write:1", 4),                   # halfway through writing step 8's first checkpoint file
        ("manifest:2", 4),                # step 8 commits; step 12's files written, manifest not
        ("export:ref.safetensors", 8),    # halfway through placing the exported single file
        (None, None),                     # runs to the end
    ]
    for kill_at, resumes_from in runs:
        result = run_cli(prefect_api_url, tmp_path, *args, kill_at=kill_at)
        assert result.returncode == (-9 if kill_at else 0), f"{kill_at}:\n{result.stderr[-3000:]}"
        if resumes_from:
            assert f"Resuming from committed checkpoint at step {resumes_from}" in result.stderr
        assert not (storage / "ref" / "ref.safetensors").exists() or kill_at is None

    session = storage / "ref"
    assert_same_weights(final_unet(session), final_unet(reference))
    for output in ("ref.safetensors", "ref.ckpt"):
        assert sha256(session / output) == sha256(reference / output)
    assert (session / "reports" / "loss.csv").read_text() == (reference / "reports" / "loss.csv").read_text()
    assert not [p for p in session.rglob("*") if ".tmp-" in p.name], "temporary files left behind"


def corrupt_then_train_further(api_url, tmp_path, photos, damage) -> str:
    """Train 8 steps, damage step 8's weights, then train to 12; return the second run's log."""
    storage = tmp_path / "sessions"
    first = run_cli(api_url, tmp_path, *train_args(storage, "ref", photos, steps=8))
    assert first.returncode == 0, first.stderr[-3000:]
    weights = storage / "ref" / "checkpoints" / "step-000008" / "weights.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    second = run_cli(api_url, tmp_path, *train_args(storage, "ref", photos))
    assert second.returncode == 0, second.stderr[-3000:]
    return second.stderr


def test_truncated_latest_checkpoint_falls_back_to_previous(prefect_api_url, reference, tmp_path, photos):
    log = corrupt_then_train_further(prefect_api_url, tmp_path, photos, lambda data: data[:1000])
    assert "Checkpoint at step 8 is unusable" in log
    assert "Resuming from committed checkpoint at step 4" in log
    assert_same_weights(final_unet(tmp_path / "sessions" / "ref"), final_unet(reference))


def test_bit_flipped_checkpoint_is_detected_by_its_hash(prefect_api_url, reference, tmp_path, photos):
    def flip(data: bytes) -> bytes:
        return data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:]  # same size, other content

    log = corrupt_then_train_further(prefect_api_url, tmp_path, photos, flip)
    assert "Checkpoint at step 8 is corrupt" in log
    assert "Resuming from committed checkpoint at step 4" in log
    assert_same_weights(final_unet(tmp_path / "sessions" / "ref"), final_unet(reference))


def test_damaged_derived_files_heal_and_an_edited_photo_is_not_trained_as_its_old_crop(
        prefect_api_url, reference, tmp_path, photos):
    """Prepared images deleted or edited by hand are made again, a damaged dataset manifest is
    rebuilt, and a photo edited in the session after training started is refused until it is
    put back: the run then ends with the uninterrupted model."""
    storage, session = tmp_path / "sessions", tmp_path / "sessions" / "ref"
    assert run_cli(prefect_api_url, tmp_path, *train_args(storage, "ref", photos, steps=4)).returncode == 0
    items = sorted(session.glob("dataset/*.png"))
    items[0].unlink()
    items[1].write_bytes(items[2].read_bytes())
    edited = sorted((session / "photos").iterdir())[0]
    edited.write_bytes(sorted((session / "photos").iterdir())[1].read_bytes())
    without_photos = [a for a in train_args(storage, "ref", photos, steps=8) if a != str(photos)]
    without_photos.remove("--photos")

    refused = run_cli(prefect_api_url, tmp_path, *without_photos)
    assert refused.returncode == 2, refused.stderr[-3000:]
    error = refused.stderr[refused.stderr.index("error: "):]
    assert f"photos/{edited.name} in session 'ref' changed" in error and "Traceback" not in refused.stderr

    healed = run_cli(prefect_api_url, tmp_path, *train_args(storage, "ref", photos, steps=8))
    assert healed.returncode == 0, healed.stderr[-3000:]
    assert f"photos/{edited.name} changed in session 'ref' after training started; put back" in healed.stderr
    assert f"{items[0].name} (prepared from" in healed.stderr and "is missing" in healed.stderr
    assert f"{items[1].name} (prepared from" in healed.stderr
    assert "not the image that was prepared" in healed.stderr

    (session / "dataset" / "manifest.json").write_text("{")
    last = run_cli(prefect_api_url, tmp_path, *train_args(storage, "ref", photos))
    assert last.returncode == 0, last.stderr[-3000:]
    assert "dataset/manifest.json is damaged; preparing the photos again" in last.stderr
    assert_same_weights(final_unet(session), final_unet(reference))
