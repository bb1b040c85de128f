"""The README's picture: the tiny demo run against a temporary `prefect server`, and its flow-run
page in the Prefect UI saved by headless Chromium as docs/images/flow-run.png.

    .venv/bin/python docs/tools/flow_run_screenshot.py [--out docs/images/flow-run.png]

Needs Chromium (apt-get install chromium) and the test extras (playwright); a few minutes on a CPU.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SESSION = "demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    """`prefect server start` with the UI on a free port, in its own PREFECT_HOME."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                "--port", str(port)], env=env,
                               stdout=open(home / "server.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return process, api
        except httpx.TransportError:
            time.sleep(1)
    process.terminate()
    raise SystemExit(f"prefect server did not start within 120 s: see {home / 'server.log'}")


def run_demo(api: str, storage: Path) -> str:
    """The README's main command against the server; the id of its flow run."""
    env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "flows.cli", "train", "--session", SESSION, "--storage",
                    str(storage), "--photos", str(REPO / "examples" / "photos"), "--model", "tiny",
                    "--evaluate-every", "1"], env=env, check=True, timeout=3600)
    runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
    flow_run_id = next(run["id"] for run in runs if run["name"] == SESSION)
    # The server records task runs from their events, a moment after the run ends: the graph needs them.
    deadline = time.monotonic() + 60
    of_the_run = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
    while time.monotonic() < deadline and httpx.post(f"{api}/task_runs/count", json=of_the_run).json() < 10:
        time.sleep(1)
    return flow_run_id


def screenshot(api: str, flow_run_id: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.set_default_timeout(30_000)
        page.goto(f"{api.removesuffix('/api')}/runs/flow-run/{flow_run_id}")
        page.get_by_text("Completed").first.wait_for()
        page.wait_for_timeout(5000)  # the timeline graph draws after the page
        page.screenshot(path=str(out))
        browser.close()
    # A palette of 128 colours: a UI screenshot loses nothing visible, and the file stays small.
    Image.open(out).convert("RGB").quantize(128).save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "flow-run.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server, api = start_server(Path(folder))
        try:
            screenshot(api, run_demo(api, Path(folder) / "sessions"), args.out)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
