"""Secrets stay in their blocks: runs that use canary secrets, one of them failing,
write them nowhere — not in session storage, Prefect's home, database, results or logs."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import gcsfs
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

pytestmark = pytest.mark.slow  # a CLI or Prefect run each: the full suite only

REPO = Path(__file__).resolve().parents[2]
CANARY = f"canary{uuid.uuid4().hex}"  # every secret below contains it


def service_account_info() -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": "dreambooth-test", "private_key_id": f"{CANARY}-key-id",
            "private_key": pem, "client_email": "trainer@dreambooth-test.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token"}


@pytest.fixture
def blocks(prefect_api_url, gcs_bucket):
    from prefect_gcp import GcpCredentials

    from blocks import HuggingFaceCredentials, SessionStorage

    info = service_account_info()
    SessionStorage(url=f"{gcs_bucket}/sessions", gcp_credentials=GcpCredentials(service_account_info=info),
                   secret_options={"canary_option": SecretStr(f"{CANARY}-option")}).save("canary-storage", overwrite=True)
    HuggingFaceCredentials(token=SecretStr(f"hf_{CANARY}")).save("canary-hf", overwrite=True)
    return gcs_bucket, [f"{CANARY}-key-id", f"hf_{CANARY}", f"{CANARY}-option",
                        info["private_key"].splitlines()[5]]


def run_cli(api_url, cwd, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def everything_written(bucket: str, prefect_db: Path) -> dict[str, bytes]:
    files = {f"gs://{p}": gcsfs.GCSFileSystem(token="anon").cat_file(p)
             for p in gcsfs.GCSFileSystem(token="anon").find(bucket[5:])}
    for root in (Path(os.environ["PREFECT_HOME"]), prefect_db.parent):
        files.update({str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()})
    return files


def prefect_logs() -> str:
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    messages = []
    with get_client(sync_client=True) as client:
        while page := client.read_logs(offset=len(messages), limit=200):  # every log of the server
            messages += [log.message for log in page]
    return "\n".join(messages)


def prefect_records() -> str:
    """Logs, parameters, states and artifacts of every run, as the Prefect API gives them."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        parts = [run.model_dump_json() for run in client.read_flow_runs() + client.read_task_runs()]
        parts += [artifact.model_dump_json() for artifact in client.read_artifacts()]
    return prefect_logs() + "\n".join(parts)


def test_canary_secrets_are_written_nowhere(prefect_api_url, blocks, tmp_path, photos):
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    bucket, secrets = blocks
    common = ["--storage-block", "canary-storage", "--hf-credentials-block", "canary-hf", "--photos", str(photos)]
    trained = run_cli(prefect_api_url, tmp_path, "train", "--session", "shrk", "--model", "tiny",
                      "--steps", "4", "--chunk-steps", "2", *common)
    assert trained.returncode == 0, trained.stderr[-3000:]
    failed = run_cli(prefect_api_url, tmp_path, "train", "--session", "gated", "--model", "someone/gated-model",
                     "--resolution", "64",  # past the photo check, to the download that uses the token
                     *common)
    assert failed.returncode == 2 and "gated-model" in failed.stderr, failed.stderr[-3000:]

    files = everything_written(bucket, Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///")[1]))
    assert any(name.endswith("shrk/shrk.safetensors") for name in files)  # the run wrote its outputs there
    assert any("/.prefect-results/" in name for name in files)  # and its task results
    assert any(name.endswith("prefect-test.db") for name in files)  # the server's database, blocks included
    records = prefect_records()
    assert "Trained 4 steps" in records
    for secret in secrets:
        assert secret not in trained.stdout + trained.stderr + failed.stdout + failed.stderr
        assert secret not in records
        leaks = [name for name, data in files.items() if secret.encode() in data]
        assert not leaks, f"a secret was written to {leaks}"


def test_a_secret_that_reaches_a_log_line_is_masked(prefect_api_url, blocks, tmp_path):
    script = ("from prefect import flow, get_run_logger\n"
              "from blocks import HuggingFaceCredentials\n"
              "@flow(name='careless')\n"
              "def careless():\n"
              "    token = HuggingFaceCredentials.load('canary-hf').reveal_token()\n"
              "    get_run_logger().info('token is %s', token)\n"
              "    raise RuntimeError('failed with ' + token)\n"
              "careless(return_state=True)\n")
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "token is **********" in result.stderr and "failed with **********" in result.stderr
    logs = prefect_logs()
    assert "token is **********" in logs and "failed with **********" in logs
    assert f"hf_{CANARY}" not in result.stderr + logs
