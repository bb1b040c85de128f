"""Test-session set-up: one Prefect server, one model cache, no network."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Beside, not inside, the folder of pytest -n's controller (whose TMPDIR its test processes inherit):
# the controller removes its folder when its session ends, before they have ended.
_ROOT = os.environ.setdefault("DREAMBOOTH_TESTS_TEMP_ROOT", tempfile.gettempdir())
_HOME = Path(tempfile.mkdtemp(prefix="dreambooth-tests-", dir=_ROOT))
# Registered before prefect is imported, so it runs after Prefect's own clean-up at exit (which
# removes the test server's folder inside this one).
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
# Before prefect is imported anywhere: its settings are read from the environment.
os.environ.update({
    "PREFECT_HOME": str(_HOME / "prefect"),
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DREAMBOOTH_CACHE": str(_HOME / "cache"),
    "HF_HUB_OFFLINE": "1",
    # Scratch folders too: tests that count what a run leaves in the temporary folder must not see
    # what a test in another process (pytest -n) leaves there meanwhile.
    "TMPDIR": str(_HOME),
})
tempfile.tempdir = None  # read TMPDIR again
# Test processes side by side (pytest -n): each, and the runs it starts, on its share of the cores,
# not every process on all of them (torch's threads would then fight for the cores).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))

import pytest  # noqa: E402
from gcs_emulator import gcs_bucket, gcs_emulator  # noqa: E402,F401 - fixtures

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_PHOTOS = REPO / "examples" / "photos"


@pytest.fixture(scope="session")
def prefect_api_url():
    """Prefect's own temporary server, started once for the whole test run. Its address goes into
    the environment too: the harness sets it only in Prefect's settings, and an in-process
    `dreambooth train` that finds no PREFECT_API_URL starts (and waits ~9 s for) a server of its own."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        url = PREFECT_API_URL.value()
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    from dreambooth_core.families.base_model import fetch_model

    return fetch_model("tiny", Path(os.environ["DREAMBOOTH_CACHE"])).path


@pytest.fixture
def photos(tmp_path) -> Path:
    """A copy of the example photos the README's demo uses."""
    folder = tmp_path / "photos"
    shutil.copytree(EXAMPLE_PHOTOS, folder)
    return folder


@pytest.fixture
def hub_at(monkeypatch):
    """Point huggingface_hub at a given address instead of huggingface.co, in online mode."""
    import huggingface_hub.constants as constants

    def point(endpoint: str) -> None:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # turned on above
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    return point


@pytest.fixture(scope="session")
def tiny_klein(tmp_path_factory) -> Path:
    """The tiny FLUX.2 [klein], built once for the family tests."""
    from dreambooth_core.families.klein_tiny import build_tiny_klein_model

    return build_tiny_klein_model(tmp_path_factory.mktemp("tiny-klein") / "model")
