"""The Prefect server a `dreambooth train` runs on when no server is set, and that dies with it.

Prefect's own temporary server is a child process that outlives its parent when
the parent is killed (SIGKILL, the out-of-memory killer): it runs on, re-parented
to init. This one is started by the CLI and ends however the CLI ends: stopped on
a normal exit or an exception, and on Linux the kernel sends it SIGTERM when its
parent dies (PR_SET_PDEATHSIG); elsewhere a watchdog thread notices that its
parent is gone within a second. It starts while the CLI imports the training
libraries, so its start-up costs little of the run's time.

Run as `python -m flows.temporary_server PARENT_PID PORT` (by `temporary_server()` only).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dreambooth_core.errors import ConfigError
from dreambooth_core.session.processes import end_with_parent

# What Prefect's own temporary server runs with: no UI, the ephemeral server's services.
_SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
API_CHECK_SECONDS = 5.0  # a server that is up answers /health in milliseconds
# Prefect's 20 s default start-up wait was seen to run out on 2 busy cores (the server imports
# while the run imports torch and the model classes); a larger setting still wins.
START_SECONDS = 60.0
_ADVICE = ("Run again, or start a server (prefect server start) and set PREFECT_API_URL to it "
           "(e.g. http://127.0.0.1:4200/api).")


class TemporaryServer:
    """A server process on 127.0.0.1 for this run."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flows.temporary_server", str(os.getpid()), str(self.port)],
            env={**os.environ, **_SERVER_ENV})

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_ready(self, timeout: float | None = None, meanwhile: Iterator[object] = iter(())) -> None:
        """Return once the server answers. Until then, step through `meanwhile` (work the run
        needs later, in short steps): the wait is free time."""
        import httpx
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        timeout = timeout or max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), START_SECONDS)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError("the temporary Prefect server exited at start (code "
                                  f"{self.process.returncode}). {_ADVICE}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if next(meanwhile, None) is None:
                time.sleep(0.1)
        raise ConfigError(f"the temporary Prefect server did not answer within {timeout:.0f} s. {_ADVICE}")

    @contextmanager
    def run_settings(self) -> Iterator[None]:
        """Prefect settings for runs on this server: no flow-run heartbeats (nothing could act on
        them: the server ends with the run, and Prefect waits up to a second for its heartbeat
        thread at the end of every flow run), and no client retries: this server does not come
        back once it stops answering (killed by the out-of-memory killer, say), so a retried
        call, the report of the run's end among them, would only wait about a minute for nothing."""
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES as RETRIES
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY as HEARTBEATS
        from prefect.settings import temporary_settings

        with temporary_settings(updates={HEARTBEATS: None, RETRIES: 0}):
            yield

    def stop(self) -> None:
        if self.process.poll() is not None:
            return  # it died during the run: nothing can be sent to it
        _send_pending_logs_and_events()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ConfiguredServer:
    """The server PREFECT_API_URL names: nothing to start or wait for."""

    def wait_ready(self, timeout: float = 0, meanwhile: Iterator[object] = iter(())) -> None:
        pass

    def run_settings(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # heartbeats as configured: automations may watch them


@contextmanager
def temporary_server() -> Iterator[TemporaryServer | ConfiguredServer]:
    """A server for the body of the block when no server is configured. The body may do other
    work before it calls `wait_ready()` on what it gets, while the server starts.

    Must be entered before Prefect is imported: Prefect reads PREFECT_API_URL once, at import."""
    if configured_api_url():
        require_configured_server("dreambooth then starts a temporary server of its own for the run")
        yield ConfiguredServer()
        return
    server = TemporaryServer()
    os.environ["PREFECT_API_URL"] = server.api_url  # for this process and its children
    try:
        yield server
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def _send_pending_logs_and_events() -> None:
    """What Prefect still holds for the server (the last log lines, events), before it goes."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def require_configured_server(without: str | None) -> None:
    """A ConfigError now when PREFECT_API_URL is set but no Prefect server answers there (one that
    was stopped, a stale profile): Prefect would end in a traceback later, after its retries.
    `without` says what the command does when no server is set (None: it needs one)."""
    import httpx

    url, origin = _configured_api_url_and_origin()
    if url is None:
        return
    try:
        # verify=False: only whether the server is there is asked, and nothing secret is sent
        answer = httpx.get(f"{url.rstrip('/')}/health", timeout=API_CHECK_SECONDS, verify=False)
    except httpx.HTTPError as exc:
        problem = f"no Prefect server answers ({type(exc).__name__}: {exc or 'no answer'})"
    else:
        # A server that wants a key (Prefect Cloud) is there; its key is Prefect's to check.
        if answer.status_code in (200, 401, 403) or "/accounts/" in url:
            return
        problem = f"what answers is not a Prefect server (HTTP {answer.status_code} for /health)"
    unset = ("unset PREFECT_API_URL" if origin == "the environment"
             else "remove it from the profile (prefect config unset PREFECT_API_URL)")
    raise ConfigError(f"PREFECT_API_URL is {url} (set in {origin}), but {problem}. Start that server "
                      f"(prefect server start) or correct the address" +
                      (f", or {unset}: {without}." if without else "."))


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile (`prefect config set`),
    read without importing Prefect."""
    return _configured_api_url_and_origin()[0]


def _configured_api_url_and_origin() -> tuple[str | None, str]:
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"], "the environment"
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        profiles = _read_toml(path)
    except (OSError, ValueError):  # no profiles file, or one that is not TOML
        return None, ""
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    url = profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL") or None
    return url, f"the Prefect profile {active!r} ({path})"


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10: the toml package Prefect depends on
        import toml as tomllib
    return tomllib.loads(path.read_text())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the server process -----------------------------------------------------------------

def _die_with(parent: int) -> None:
    end_with_parent(parent, signal.SIGTERM)  # SIGTERM: uvicorn shuts down cleanly

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        os._exit(0)  # uvicorn did not shut down in time

    threading.Thread(target=watch, daemon=True).start()


def serve(parent: int, port: int) -> None:
    import uvicorn

    _die_with(parent)
    uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port,
                log_level="error", lifespan="on")


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
