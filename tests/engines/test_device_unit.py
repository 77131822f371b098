"""Where an engine's model runs: the device setting (auto, cpu, cuda) parsed from the
environment the operator renders, and resolved against what the libraries report. Tests
run on CPU; scripts/gpu-check.sh runs the engines on a CUDA device where there is one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import _pywhispercpp
import ctranslate2
import llama_cpp
import pytest
from pydantic import ValidationError

from voice_engines.common.device import resolve_device
from voice_engines.llm.backends.llamacpp import gpu_layers
from voice_engines.llm.settings import LlmEngineSettings
from voice_engines.stt.backends.whispercpp import whispercpp_has_cuda
from voice_engines.stt.settings import SttEngineSettings

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("wanted", "gpu", "device"),
    [
        (None, False, "cpu"),
        (None, True, "cuda"),
        ("auto", False, "cpu"),
        ("auto", True, "cuda"),
        ("cpu", True, "cpu"),
        ("cpu", False, "cpu"),
        ("cuda", True, "cuda"),
    ],
)
def test_the_device_follows_the_setting_and_what_is_there(wanted, gpu, device):
    assert resolve_device(wanted, gpu, "STT_DEVICE") == device


def test_cuda_without_a_usable_gpu_fails_naming_the_setting():
    with pytest.raises(RuntimeError, match="STT_DEVICE=cuda, but no CUDA device is usable"):
        resolve_device("cuda", False, "STT_DEVICE")


def test_llama_cpp_puts_every_layer_on_the_gpu_unless_told_fewer():
    assert gpu_layers("cpu", None) == 0
    assert gpu_layers("cpu", 20) == 0
    assert gpu_layers("cuda", None) == -1  # llama.cpp's "all"
    assert gpu_layers("cuda", 20) == 20


def test_device_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("STT_DEVICE", "cuda")
    monkeypatch.setenv("LLM_DEVICE", "cpu")
    monkeypatch.setenv("LLM_GPU_LAYERS", "12")
    assert SttEngineSettings().stt_device == "cuda"
    llm = LlmEngineSettings()
    assert (llm.llm_device, llm.llm_gpu_layers) == ("cpu", 12)


def test_unset_device_settings_mean_auto_and_all_layers(monkeypatch):
    for name in ("STT_DEVICE", "LLM_DEVICE", "LLM_GPU_LAYERS"):
        monkeypatch.delenv(name, raising=False)
    assert SttEngineSettings().stt_device is None
    llm = LlmEngineSettings()
    assert (llm.llm_device, llm.llm_gpu_layers) == (None, None)


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [("STT_DEVICE", "gpu", "stt_device"), ("LLM_GPU_LAYERS", "-1", "llm_gpu_layers")],
)
def test_a_bad_device_setting_is_refused_naming_it(monkeypatch, name, value, field):
    monkeypatch.setenv(name, value)
    settings = SttEngineSettings if name.startswith("STT") else LlmEngineSettings
    with pytest.raises(ValidationError, match=field):
        settings()


def test_this_machine_reports_no_gpu_to_any_engine_library():
    """What `auto` sees here: the tests' CPU builds and no CUDA device."""
    assert ctranslate2.get_cuda_device_count() == 0
    assert not whispercpp_has_cuda(_pywhispercpp.whisper_print_system_info())
    assert not llama_cpp.llama_supports_gpu_offload()


def test_the_gpu_check_script_parses_and_says_when_there_is_no_gpu():
    script = REPO / "scripts" / "gpu-check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    # This machine has no NVIDIA GPU: the script says so and exits 2 without running.
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no nvidia-smi
    ran = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert ran.returncode == 2
    assert "no NVIDIA GPU here" in ran.stderr
