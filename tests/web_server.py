"""HTTP servers on 127.0.0.1 for the tests that download: a web server with fixed answers,
what the Hugging Face hub answers for a repo, and an address where nothing listens."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
from pathlib import Path


class FakeServer:
    """Serves fixed answers on 127.0.0.1 and records every request.

    A route's answer is bytes (200, with Range support unless ranges=False), an int
    status, or (status, headers, body). `cut_at` sends only that many bytes of a
    200 answer and closes the connection, like a download that is interrupted.
    """

    def __init__(self, routes: dict, ranges: bool = True):
        self.routes, self.ranges, self.cut_at = routes, ranges, None
        self.requests: list[dict] = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def bytes_sent(self) -> int:
        return sum(r["sent"] for r in self.requests)

    def _answer(self, method: str, path: str, headers) -> tuple[int, dict, bytes]:
        answer = self.routes.get(path.split("?", 1)[0], 404)
        if isinstance(answer, int):
            return answer, {}, b""
        status, extra, body = answer if isinstance(answer, tuple) else (200, {}, answer)
        asked = headers.get("Range", "")
        if status == 200 and self.ranges and asked.startswith("bytes="):
            start = int(asked[len("bytes="):].split("-")[0])
            if start >= len(body):
                return 416, {}, b""
            extra = {**extra, "Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
            return 206, extra, body[start:]
        return status, extra, body

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self._reply(send_body=True)

            def do_HEAD(self):
                self._reply(send_body=False)

            def _reply(self, send_body: bool):
                status, headers, body = server._answer(self.command, self.path, self.headers)
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                sent = body[:server.cut_at] if server.cut_at is not None and status == 200 else body
                if send_body:
                    self.wfile.write(sent)
                server.requests.append({"method": self.command, "path": self.path,
                                        "range": self.headers.get("Range"), "auth": self.headers.get("Authorization"),
                                        "sent": len(sent) if send_body else 0})

            def log_message(self, *args):
                pass

        return Handler


def closed_port_url(path: str) -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_routes(repo: str, folder: Path) -> dict:
    """What the hub answers for a repo holding `folder`, plus files fetch_model must skip."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    files["unet/diffusion_pytorch_model.fp16.safetensors"] = b"half precision copy"
    files["safety_checker/model.safetensors"] = b"safety checker"
    files["v1-5-pruned.ckpt"] = b"single-file copy"
    tree = [{"type": "file", "path": name, "size": len(body), "oid": hashlib.sha1(body).hexdigest()}
            for name, body in files.items()]
    info = {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": name} for name in files]}
    routes = {f"/api/models/{repo}/revision/main": json.dumps(info).encode(),
              f"/api/models/{repo}/tree/{COMMIT}": json.dumps(tree).encode()}
    for name, body in files.items():
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(body).hexdigest()}"'}
        routes[f"/{repo}/resolve/{COMMIT}/{name}"] = (200, headers, body)
    return routes
