"""Helpers for the gateway tests: a gateway process with a routes file the test owns,
routes written the way kubelet updates a ConfigMap volume, and word error rates."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from testground.speech import wer as wer

from voice_engines.demo.stack import LocalProcess


class ConfigMapDir:
    """A ConfigMap volume as kubelet lays it out: routes.json -> ..data/routes.json,
    ..data -> a timestamped folder; an update writes a new folder and swaps ..data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = root / "routes.json"
        self.version = 0

    def write(self, document: dict[str, Any] | str) -> None:
        self.version += 1
        folder = self.root / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{self.version}"
        folder.mkdir()
        text = (
            document
            if isinstance(document, str)
            else json.dumps(document, indent=2, sort_keys=True)
        )
        (folder / "routes.json").write_text(text)
        staging = self.root / "..data_tmp"
        staging.unlink(missing_ok=True)
        staging.symlink_to(folder.name)
        os.replace(staging, self.root / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to("..data/routes.json")


class Gateway:
    """voice-gateway in its own process, reading routes from a ConfigMap-like folder."""

    def __init__(
        self, env: dict[str, str] | None = None, routes: dict[str, Any] | None = None
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="voice-gateway-test-"))
        self.configmap = ConfigMapDir(self.dir / "routes")
        if routes is not None:
            self.configmap.write(routes)
        self.process = LocalProcess(
            "gateway",
            "voice_engines.gateway.main",
            {
                "GATEWAY_AGENT": "test",
                "GATEWAY_ROUTES_PATH": str(self.configmap.path),
                "GATEWAY_ROUTES_POLL_SECONDS": "0.2",
                "LOG_LEVEL": "INFO",
                **(env or {}),
            },
            self.dir,
        )
        self.url = self.process.url
        self.ws_url = self.url.replace("http://", "ws://") + "/v1/stream"

    def wait_alive(self) -> Gateway:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"gateway did not come up:\n{self.process.log_tail()}")

    def generation(self) -> int:
        return int(httpx.get(f"{self.url}/v1/routes", timeout=5).json()["generation"])

    def apply(self, routes: dict[str, Any] | str, expect_change: bool = True) -> int:
        """Writes the routes and waits until the gateway applied them (expect_change
        False: until it rejected them)."""
        before = self.generation()
        rejected = self.metric("gateway_routes_reloads_total", result="rejected")
        self.configmap.write(routes)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if expect_change and self.generation() > before:
                return before + 1
            if not expect_change and (
                self.metric("gateway_routes_reloads_total", result="rejected") > rejected
            ):
                return before
            time.sleep(0.05)
        raise TimeoutError("the gateway did not pick up the routes")

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value from /metrics (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> None:
        self.process.stop()


def turn(gateway_url: str, wav: bytes, timeout: float = 120, **fields: str) -> httpx.Response:
    return httpx.post(
        f"{gateway_url}/v1/turn",
        files={"file": ("question.wav", wav, "audio/wav")},
        data=fields,
        timeout=timeout,
    )


def stream_utterance(ws: Any, pcm: bytes, frame_bytes: int = 640) -> dict[str, Any]:
    """Sends one utterance over the gateway's WebSocket in frames, then its end, and
    returns the message that closed the turn (done or error)."""
    for offset in range(0, len(pcm), frame_bytes):
        ws.send(pcm[offset : offset + frame_bytes])
    ws.send(json.dumps({"type": "end"}))
    while True:
        message = ws.recv(timeout=60)
        if isinstance(message, str) and json.loads(message)["type"] in ("done", "error"):
            return dict(json.loads(message))
