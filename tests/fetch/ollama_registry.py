"""A minimal Ollama model registry on 127.0.0.1 serving a real GGUF, so that the real
`ollama` binary can pull without leaving the machine.

Ollama's protocol: GET the manifest, HEAD each blob, GET it (it expects a redirect to
another host name, a CDN), then ranged GETs there. The "CDN" is a FileServer reached as
`localhost`, which to Ollama is another host than 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fileserver import FileServer

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


class OllamaRegistry:
    def __init__(self, gguf: Path, work: Path, cdn: FileServer) -> None:
        config = json.dumps({"model_format": "gguf", "model_family": "llama"}).encode()
        config_path = work / "config.json"
        config_path.write_bytes(config)
        self.blobs: dict[str, Path] = {}
        layers = []
        for path, media_type in (
            (gguf, "application/vnd.ollama.image.model"),
            (config_path, "application/vnd.docker.container.image.v1+json"),
        ):
            digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
            self.blobs[digest] = path
            layers.append({"mediaType": media_type, "digest": digest, "size": path.stat().st_size})
            cdn.add(f"cdn/{digest}", path)
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": layers[1],
                "layers": layers[:1],
            }
        ).encode()
        self.cdn_base = cdn.base.replace("127.0.0.1", "localhost")
        self.requests: list[str] = []
        self.missing = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{host!s}:{port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                registry.requests.append(f"{self.command} {self.path}")
                if "/manifests/" in self.path and not registry.missing:
                    self._reply(200, MANIFEST_TYPE, registry.manifest, head)
                    return
                digest = self.path.rsplit("/", 1)[-1]
                blob = registry.blobs.get(digest) if "/blobs/" in self.path else None
                if blob is None or registry.missing:
                    self._reply(404, "application/json", b'{"errors":[{"code":"UNKNOWN"}]}', head)
                elif head:
                    self.send_response(200)
                    self.send_header("Content-Length", str(blob.stat().st_size))
                    self.end_headers()
                else:
                    self.send_response(307)
                    self.send_header("Location", f"{registry.cdn_base}/cdn/{digest}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def _reply(self, code: int, kind: str, body: bytes, head: bool) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        return Handler
