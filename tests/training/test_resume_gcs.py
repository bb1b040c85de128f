"""Nothing is lost on gs:// either: runs killed at any instant against a GCS emulator,
rerun, end with the model an uninterrupted run on local disk produces."""

import hashlib
import os
import subprocess
import sys

import gcsfs
import pytest
import safetensors.torch
from test_resume import REPO, RUN_CLI, STEPS, assert_same_weights, final_unet, reference, run_cli, sha256, train_args  # noqa: F401

pytestmark = pytest.mark.slow  # a CLI or Prefect run each: the full suite only


def test_killed_runs_on_gcs_resume_to_the_uninterrupted_model(prefect_api_url, reference, gcs_bucket,  # noqa: F811
                                                              tmp_path, photos):
    storage = f"{gcs_bucket}/sessions"
    args = train_args(storage, "ref", photos)
    runs = [  # (where this run is killed, the checkpoint it must resume from), as on local disk
        ("step:6", None),
        ("write:1", 4),                   # halfway through uploading step 8's first file
        ("manifest:2", 4),                # step 8 commits; step 12's files uploaded, manifest not
        ("export:ref.safetensors", 8),    # halfway through uploading the exported single file
        (None, None),
    ]
    fs = gcsfs.GCSFileSystem(token="anon")
    session = f"{storage[5:]}/ref"
    for kill_at, resumes_from in runs:
        result = run_cli(prefect_api_url, tmp_path, *args, kill_at=kill_at)
        assert result.returncode == (-9 if kill_at else 0), f"{kill_at}:\n{result.stderr[-3000:]}"
        if resumes_from:
            assert f"Resuming from committed checkpoint at step {resumes_from}" in result.stderr
        fs.invalidate_cache()
        assert not fs.exists(f"{session}/ref.safetensors") or kill_at is None

    weights = fs.cat_file(f"{session}/checkpoints/step-{STEPS:06d}/weights.safetensors")
    assert_same_weights(safetensors.torch.load(weights), final_unet(reference))
    for output in ("ref.safetensors", "ref.ckpt"):
        assert hashlib.sha256(fs.cat_file(f"{session}/{output}")).hexdigest() == sha256(reference / output)
    leftovers = [p for p in fs.find(session) if ".tmp-" in p]
    assert not leftovers, f"temporary objects left behind: {leftovers}"
    assert fs.find(f"{storage[5:]}/.prefect-results"), "task results are not stored beside the sessions"

    # Another machine: its own Prefect home and server. The results on the bucket are its cache.
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "other-machine")}
    env.pop("PREFECT_API_URL", None)
    again = subprocess.run([sys.executable, str(RUN_CLI), "--", *args], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Trained 0 steps in this run; 3 of 3 chunks were cached; export was cached" in again.stderr
