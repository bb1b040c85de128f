"""A Google Cloud Storage emulator (the gcp-storage-emulator package) for the tests.

It runs in its own process on a free port; STORAGE_EMULATOR_HOST points gcsfs
(in this process and in the CLI subprocesses the tests start) at it.
"""

import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

# Before anything imports gcsfs (it reads this once): its experimental gRPC probe would
# wait 60 s per bucket for an emulator that speaks only HTTP.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_listening(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the GCS emulator exited with code {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the GCS emulator did not start listening")


@pytest.fixture(scope="session")
def gcs_emulator():
    """The emulator's address; the environment points gcsfs at it."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--port", str(port),
                                "--in-memory", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        _wait_until_listening(port, process)
        host = f"http://127.0.0.1:{port}"
        os.environ["STORAGE_EMULATOR_HOST"] = host
        yield host
    finally:
        process.terminate()
        process.wait(timeout=10)
    if saved is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = saved


@pytest.fixture
def gcs_bucket(gcs_emulator) -> str:
    """A new empty bucket, as a gs:// URL."""
    import gcsfs

    name = f"test-{uuid.uuid4().hex[:12]}"
    fs = gcsfs.GCSFileSystem(token="anon")
    fs.mkdir(name)
    fs.invalidate_cache()
    return f"gs://{name}"
