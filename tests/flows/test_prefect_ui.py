"""The Prefect UI in a real browser: a real `prefect server`, the tiny flow run against it,
and headless Chromium checking that the artifacts are listed and their images render."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and os.path.exists(p)), None)
SESSION = "browser"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium: install Debian's chromium package "
                             "(apt-get install chromium) to check the Prefect UI in a browser")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`prefect server start` with the UI, on a free port, in its own PREFECT_HOME."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")),
           "PREFECT_UI_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                                "127.0.0.1", "--port", str(port), "--no-services"],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "prefect server exited early"
            time.sleep(1)
        else:
            pytest.fail("prefect server did not start within 120 s")
        yield api
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def flow_run_id(server, tmp_path_factory) -> str:
    storage = tmp_path_factory.mktemp("ui") / "sessions"
    env = {**os.environ, "PREFECT_API_URL": server, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "train", "--session", SESSION, "--storage", str(storage),
         "--photos", str(REPO / "examples" / "photos"), "--model", "tiny", "--steps", "20"],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = httpx.post(f"{server}/flow_runs/filter", json={}, timeout=10).json()
    return next(run["id"] for run in runs if run["name"] == SESSION)


def rendered_images(page) -> list[int]:
    """naturalWidth of each image on the page once it has loaded."""
    page.wait_for_selector("img")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    return page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")


def test_artifacts_are_listed_and_their_images_render(server, flow_run_id):
    from playwright.sync_api import sync_playwright

    ui = server.removesuffix("/api")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.set_default_timeout(30_000)
        page.goto(f"{ui}/runs/flow-run/{flow_run_id}")
        page.get_by_text("Artifacts", exact=True).first.click()
        for key in ("training", "summary", "loss", "samples", "contact-sheet", "dataset", "tokens"):
            page.get_by_text(f"{key}-{SESSION}", exact=True).first.wait_for()
        assert page.get_by_text("Training browser: complete, 20/20 steps").count() == 1

        for key in ("contact-sheet", "loss", "samples"):
            page.goto(f"{ui}/runs/flow-run/{flow_run_id}")
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text(f"{key}-{SESSION}", exact=True).first.click()
            page.wait_for_url("**/artifacts/artifact/**")
            widths = rendered_images(page)
            assert len(widths) == 1 and widths[0] > 0, key

        page.goto(f"{ui}/runs/flow-run/{flow_run_id}")
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text(f"summary-{SESSION}", exact=True).first.click()
        page.get_by_text("Output files").wait_for()
        assert page.get_by_text(f"{SESSION}.safetensors", exact=True).count() == 1
        browser.close()
