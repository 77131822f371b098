"""A stand-in for the Hugging Face Hub on 127.0.0.1: the file-resolve protocol that
huggingface_hub speaks (`HEAD|GET /<repo>/resolve/<revision>/<path>`).

As the Hub does for files kept in LFS, it answers with a 302 to a CDN (here the test
suite's FileServer, another origin, which serves the bytes with Range), the
`X-Repo-Commit`, `X-Linked-Etag` (the sha256) and `X-Linked-Size` headers, and its errors
carry `X-Error-Code` / `X-Error-Message` as the Hub's do: a private repo without a token is
RepoNotFound (401), a wrong token 401 "Invalid credentials", an unknown revision
RevisionNotFound, an unknown file EntryNotFound."""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fetch.fileserver import FileServer

_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


@dataclass
class Repo:
    commit: str
    branches: set[str]
    token: str | None  # private: only this token may read
    files: dict[str, str] = field(default_factory=dict)  # path in repo -> name on the CDN


class HubServer:
    def __init__(self, cdn: FileServer) -> None:
        self.cdn = cdn
        self.repos: dict[str, Repo] = {}
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_repo(self, repo_id: str, token: str | None = None) -> Repo:
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = repo = Repo(commit, {"main"}, token)
        return repo

    def add_file(self, repo_id: str, path: str, source: Path, **behaviour: Any) -> None:
        """The file goes to the CDN under a content-addressed name, as LFS objects do."""
        name = "lfs/" + hashlib.sha256(source.read_bytes()).hexdigest()
        self.cdn.add(name, source, **behaviour)
        self.repos[repo_id].files[path] = name

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    return type("HubHandler", (_Handler,), {"hub": hub})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._resolve()

    def do_GET(self) -> None:
        self._resolve()

    def _resolve(self) -> None:
        with self.hub.lock:
            self.hub.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                }
            )
        m = _RESOLVE.fullmatch(self.path.split("?")[0])
        if not m:
            self._error(404, None, "Not Found")
            return
        _kind, repo_id, revision, filename = m.groups()
        revision, filename = unquote(revision), unquote(filename)
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found")
            return
        given = self.headers.get("Authorization")
        if repo.token is not None:
            if given is None:
                self._error(401, "RepoNotFound", "Repository not found")
                return
            if given != f"Bearer {repo.token}":
                self._error(401, None, "Invalid credentials in Authorization header")
                return
        if revision not in repo.branches and revision != repo.commit:
            self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
            return
        name = repo.files.get(filename)
        if name is None:
            self._error(404, "EntryNotFound", "Entry not found")
            return
        served, sha256 = self.hub.cdn.served(name), name.removeprefix("lfs/")
        self.send_response(302)
        self.send_header("Location", f"{self.hub.cdn.base}/{name}")
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("X-Linked-Etag", f'"{sha256}"')
        self.send_header("X-Linked-Size", str(served.size))
        self.send_header("ETag", f'"{sha256}"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _error(self, status: int, code: str | None, message: str) -> None:
        body = ('{"error":"' + message + '"}').encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
