"""A Hugging Face hub on 127.0.0.1 for the publish tests: it answers the upload API calls
huggingface_hub makes (repo create and info, preupload, paths-info, the LFS batch API and its
basic PUT transfer, the NDJSON commit, YAML validation) as the hub does, and keeps the repos'
files so a test can see what arrived. A stand-in only because the hub cannot be reached here.

Xet, the hub's newer storage, is a binary protocol of hf_xet's; tests turn it off
(HF_HUB_DISABLE_XET), as huggingface_hub does without hf_xet, so files go through LFS.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import http.server
import json
import threading
import urllib.parse
from dataclasses import dataclass, field

import yaml

# The .gitattributes the hub puts in a new model repo (the patterns that go to LFS), in part.
LFS_PATTERNS = ("*.safetensors", "*.ckpt", "*.bin", "*.pt", "*.pth", "*.pkl", "*.h5", "*.msgpack", "*.onnx",
                "*.zip", "*tfevents*")
LFS_SIZE = 10 * 1024 * 1024


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def stored(content: bytes, lfs: bool) -> dict:
    return {"content": content, "sha256": hashlib.sha256(content).hexdigest(), "lfs": lfs}


@dataclass
class Repo:
    private: bool
    files: dict[str, dict] = field(default_factory=dict)  # path -> {"content", "sha256", "lfs"}
    commits: list[str] = field(default_factory=list)


class HubServer:
    """`token`: the one token it accepts; `namespaces`: where that token may create repos."""

    def __init__(self, token: str, namespaces: tuple[str, ...] = ("alice",)):
        self.token, self.namespaces = token, namespaces
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.uploaded: list[str] = []  # sha256 of every LFS object PUT
        self.committed: list[list[dict]] = []  # the operations of every commit
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def file(self, repo: str, path: str) -> bytes:
        return self.repos[repo].files[path]["content"]

    # -- the API ----------------------------------------------------------------------------

    def answer(self, method: str, path: str, headers, body: bytes) -> tuple[int, object]:
        self.requests.append((method, path))
        parts = urllib.parse.urlsplit(path).path.strip("/").split("/")
        if method == "PUT" and parts[0] == "lfs-upload":  # a presigned storage URL: no token
            return self._lfs_put(parts[1], body)
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"error": "Invalid credentials in Authorization header"}
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self._create(json.loads(body))
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(body))
        if method == "POST" and len(parts) == 6 and parts[2:] == ["info", "lfs", "objects", "batch"]:
            return self._batch(f"{parts[0]}/{parts[1].removesuffix('.git')}", json.loads(body))
        if parts[:2] != ["api", "models"] or len(parts) < 4:
            return 404, {"error": f"no route {path}"}
        repo_id = f"{parts[2]}/{parts[3]}"
        repo = self.repos.get(repo_id)
        if repo is None:
            return 404, {"error": "Repository not found"}
        action = parts[4] if len(parts) > 4 else None
        if method == "GET" and action in (None, "revision"):
            return 200, {"id": repo_id, "sha": repo.commits[-1], "private": repo.private,
                         "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
        if method == "POST" and action == "preupload":
            return self._preupload(repo, json.loads(body))
        if method == "POST" and action == "paths-info":
            return self._paths_info(repo, urllib.parse.parse_qs(body.decode()).get("paths", []))
        if method == "POST" and action == "commit":
            return self._commit(repo_id, repo, body)
        return 404, {"error": f"no route {method} {path}"}

    def _create(self, payload: dict) -> tuple[int, object]:
        namespace, name = payload.get("organization"), payload["name"]
        if namespace not in self.namespaces:
            return 403, {"error": "You don't have the rights to create a model under the namespace "
                                  f'"{namespace}"'}
        repo_id = f"{namespace}/{name}"
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
        repo = Repo(private=payload.get("visibility") == "private" or bool(payload.get("private")))
        attributes = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
        repo.files[".gitattributes"] = stored(attributes, lfs=False)
        repo.commits.append(hashlib.sha1(repo_id.encode()).hexdigest())
        self.repos[repo_id] = repo
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def _validate_yaml(self, payload: dict) -> tuple[int, object]:
        text = payload["content"]
        try:
            _, front, _ = text.split("---\n", 2)
            data = yaml.safe_load(front)
        except (ValueError, yaml.YAMLError) as exc:
            return 400, {"errors": [{"message": f"invalid YAML: {exc}"}]}
        errors = [{"message": f'"{key}" must be a list'} for key in ("tags", "widget")
                  if key in data and not isinstance(data[key], list)]
        return (400 if errors else 200), {"errors": errors, "warnings": []}

    def _is_lfs(self, path: str, size: int, sample: bytes) -> bool:
        name = path.rsplit("/", 1)[-1]
        return size >= LFS_SIZE or b"\0" in sample or any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)

    def _preupload(self, repo: Repo, payload: dict) -> tuple[int, object]:
        answers = []
        for item in payload["files"]:
            lfs = self._is_lfs(item["path"], item["size"], base64.b64decode(item["sample"]))
            known = repo.files.get(item["path"])
            oid = known and (known["sha256"] if known["lfs"] else git_blob_id(known["content"]))
            answers.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False, "oid": oid})
        return 200, {"files": answers, "commitOid": repo.commits[-1]}

    def _paths_info(self, repo: Repo, paths: list[str]) -> tuple[int, object]:
        found = []
        for path in paths:
            known = repo.files.get(path)
            if known is None:
                continue
            content = known["content"]
            entry = {"type": "file", "path": path, "size": len(content), "oid": git_blob_id(content)}
            if known["lfs"]:
                pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{known['sha256']}\n"
                           f"size {len(content)}\n").encode()
                entry |= {"oid": git_blob_id(pointer),
                          "lfs": {"oid": known["sha256"], "size": len(content), "pointerSize": len(pointer)}}
            found.append(entry)
        return 200, found

    def _batch(self, repo_id: str, payload: dict) -> tuple[int, object]:
        if repo_id not in self.repos:
            return 404, {"message": "Repository not found"}
        objects = []
        for item in payload["objects"]:
            entry = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.lfs_objects:  # the hub has it already: nothing to send
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{item['oid']}"}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def _lfs_put(self, oid: str, body: bytes) -> tuple[int, object]:
        if hashlib.sha256(body).hexdigest() != oid:
            return 400, {"error": "the content does not match its oid"}
        self.lfs_objects[oid] = body
        self.uploaded.append(oid)
        return 200, {}

    def _commit(self, repo_id: str, repo: Repo, body: bytes) -> tuple[int, object]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        operations = [line for line in lines if line["key"] != "header"]
        for op in operations:
            value = op["value"]
            if op["key"] == "file":
                content = base64.b64decode(value["content"])
                if b"\0" in content[:512]:
                    return 400, {"error": "Your push was rejected because it contains binary files. Use LFS."}
                repo.files[value["path"]] = stored(content, lfs=False)
            elif op["key"] == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    return 422, {"error": f"LFS object {value['oid']} was not uploaded"}
                repo.files[value["path"]] = stored(self.lfs_objects[value["oid"]], lfs=True)
            elif op["key"] == "deletedFile":
                if repo.files.pop(value["path"], None) is None:
                    return 404, {"error": "A file with this name doesn't exist"}
        repo.commits.append(hashlib.sha1(body).hexdigest())
        self.committed.append(operations)
        return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{repo.commits[-1]}",
                     "commitOid": repo.commits[-1], "pullRequestUrl": None}

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()
                        if not size:
                            return b"".join(chunks)
                        chunks.append(chunk)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, method: str):
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload = server.answer(method, self.path, headers, self._body())
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 404:
                    self.send_header("X-Error-Code", "RepoNotFound")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._reply("GET")

            def do_POST(self):
                self._reply("POST")

            def do_PUT(self):
                self._reply("PUT")

            def log_message(self, *args):
                pass

        return Handler
