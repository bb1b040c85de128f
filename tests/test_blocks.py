"""The blocks register with Prefect's own command, and a missing block is a clear error."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent


@pytest.mark.slow  # the prefect command in a subprocess
def test_blocks_register_with_the_prefect_command(prefect_api_url):
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PYTHONPATH": str(REPO.parent)}
    result = subprocess.run([sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
                            cwd=REPO.parent, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        slugs = {block_type.slug for block_type in client.read_block_types()}
    assert {"dreambooth-session-storage", "hugging-face-credentials"} <= slugs


def test_a_missing_storage_block_is_named_in_the_error(prefect_api_url, tmp_path, photos, capsys):
    from flows.cli import main

    code = main(["train", "--session", "shrk", "--storage-block", "no-such-storage", "--photos", str(photos),
                 "--model", "tiny"])
    error = capsys.readouterr().err
    assert code == 2
    assert "--storage-block 'no-such-storage'" in error and "prefect block register -m blocks" in error
