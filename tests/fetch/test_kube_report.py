"""`FETCH_REPORT=kube` through the official client, against a recording stand-in for the
apiserver on 127.0.0.1 (the lead's cluster tier runs the real kube-apiserver): what goes
over the wire, and what the exit code does when reporting fails."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fetchkit import ModelFile, entry, fetch_env, run_fetch
from fileserver import FileServer

pytestmark = pytest.mark.fetch

STATUS_PATH = "/apis/voiceops.dev/v1alpha1/namespaces/voice/modelassets/joe/status"


@dataclass
class FakeApiServer:
    fail_first: int = 0
    fail_status: int = 500
    patches: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0

    def __post_init__(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_PATCH(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if api.fail_first:
                    api.fail_first -= 1
                    api.refused += 1
                    self._answer(api.fail_status, {"kind": "Status", "code": api.fail_status})
                    return
                api.patches.append(
                    {
                        "path": self.path,
                        "content_type": self.headers["Content-Type"],
                        "authorization": self.headers.get("Authorization"),
                        "body": json.loads(body),
                    }
                )
                self._answer(200, {"kind": "ModelAsset", "metadata": {"name": "joe"}})

            def _answer(self, code: int, doc: dict[str, Any]) -> None:
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def kubeconfig(self, folder: Path) -> Path:
        host, port = self.httpd.server_address[:2]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "t", "cluster": {"server": f"http://{host!s}:{port}"}}],
            "users": [{"name": "t", "user": {"token": "fetcher-token"}}],
            "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
            "current-context": "t",
        }
        path = folder / "kubeconfig"
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    api = FakeApiServer()
    yield api
    api.close()


def _kube_env(
    tmp_path: Path, api: FakeApiServer, files: list[dict[str, str]], **extra: str
) -> dict[str, str]:
    return fetch_env(
        tmp_path / "v1",
        files,
        FETCH_REPORT="kube",
        KUBECONFIG=str(api.kubeconfig(tmp_path)),
        **extra,
    )


def test_status_is_merge_patched_on_the_subresource(
    tmp_path: Path, apiserver: FakeApiServer, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx"]
    url = server.add("joe.onnx", m.path, rate=m.size / 1.2)

    run = run_fetch(_kube_env(tmp_path, apiserver, [entry(m, url)], FETCH_REPORT_INTERVAL="0.3"))

    assert run.code == 0, run.stderr
    assert run.stdout == ""  # status went to the API, not to stdout
    assert len(apiserver.patches) >= 3
    for patch in apiserver.patches:
        assert patch["path"] == STATUS_PATH
        assert patch["content_type"] == "application/merge-patch+json"
        assert patch["authorization"] == "Bearer fetcher-token"
        assert list(patch["body"]) == ["status"]
        assert list(patch["body"]["status"]["downloads"]) == ["v1"]
    entries = [p["body"]["status"]["downloads"]["v1"] for p in apiserver.patches]
    assert any(e["phase"] == "Downloading" and 0 < e["doneBytes"] < m.size for e in entries)
    assert entries[-1]["phase"] == "Verified"
    assert entries[-1]["files"] == [{"path": "joe.onnx", "sha256": m.sha256, "bytes": m.size}]


def test_failed_progress_reports_do_not_disturb_the_download(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx"]
    api = FakeApiServer(fail_first=2, fail_status=503)
    try:
        run = run_fetch(_kube_env(tmp_path, api, [entry(m, server.add("j", m.path))]))
    finally:
        api.close()

    assert run.code == 0, run.stderr
    assert api.refused == 2
    assert api.patches[-1]["body"]["status"]["downloads"]["v1"]["phase"] == "Verified"


def test_unaccepted_final_report_fails_the_job(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx.json"]
    api = FakeApiServer(fail_first=1000, fail_status=500)
    try:
        run = run_fetch(_kube_env(tmp_path, api, [entry(m, server.add("j", m.path))]))
    finally:
        api.close()

    assert run.code == 1
    assert (tmp_path / "v1" / ".manifest.json").exists()  # the files themselves are fine
    assert "final status report not accepted" in run.stderr


def test_forbidden_is_not_retried(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx.json"]
    api = FakeApiServer(fail_first=1000, fail_status=403)
    try:
        run = run_fetch(_kube_env(tmp_path, api, [entry(m, server.add("j", m.path))]))
    finally:
        api.close()

    assert run.code == 1
    # Progress patches (each tried once) plus a single final attempt: no retry loop.
    assert api.refused <= 6
    assert "API status 403" in run.stderr


def test_invalid_spec_is_reported_as_failed(tmp_path: Path, apiserver: FakeApiServer) -> None:
    bad = [{"url": "gopher://h/x", "sha256": "a" * 64, "path": "x"}]

    run = run_fetch(_kube_env(tmp_path, apiserver, bad))

    assert run.code == 2
    (patch,) = apiserver.patches
    entry_ = patch["body"]["status"]["downloads"]["v1"]
    assert (entry_["phase"], entry_["reason"]) == ("Failed", "InvalidSpec")
    assert entry_["message"].startswith("spec.files[0].url: ")
