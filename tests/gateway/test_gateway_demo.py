"""The README's first command, voice-demo, run as a command: a real turn on the shipped
example, its report, and every process it started stopped again (also on Ctrl-C)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

pytestmark = pytest.mark.engines


def demo_command() -> str:
    found = shutil.which("voice-demo", path=str(Path(sys.executable).parent))
    assert found, "voice-demo is not installed in this environment (pip install -e .)"
    return found


def pids_of(output: str) -> list[int]:
    match = re.search(r"\(pids: ([^)]*)\)", output)
    assert match, output
    return [int(part.split()[1]) for part in match.group(1).split(", ")]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Still in the table: only acceptable as a zombie nobody reaped yet.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_the_demo_runs_a_real_turn_and_stops_what_it_started(tmp_path: Path) -> None:
    result = subprocess.run(
        [demo_command(), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    lines = dict(
        re.match(r"(\w[\w ]*?)\s{2,}(.*)", line).groups()  # type: ignore[union-attr]
        for line in output.splitlines()
        if re.match(r"(transcript|reply|reply WAV|timings|providers|stopped)\s{2,}", line)
    )
    assert "sky" in lines["transcript"].lower()
    assert lines["reply"].strip()
    wav_path = Path(lines["reply WAV"].split(" (")[0])
    assert wav_path.parent == tmp_path and wav_path.is_file()
    audio, rate = sf.read(wav_path)
    assert rate == 22050 and len(audio) / rate > 0.5
    for stage in ("stt", "llm first token", "llm", "tts", "total"):
        assert re.search(rf"\b{stage} \d+ ms", lines["timings"]), lines["timings"]
    assert lines["stopped"] == "gateway, tts, llm, stt"
    assert all(gone(pid) for pid in pids_of(output))


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [demo_command(), "--out", str(tmp_path), "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output = ""
    try:
        deadline = time.monotonic() + 600
        assert demo.stdout is not None
        while "Ctrl-C stops everything" not in output and time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            output += line
        assert "Ctrl-C stops everything" in output, output
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=120)
        output += rest
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130, output
    assert "stopped     gateway, tts, llm, stt" in output
    assert all(gone(pid) for pid in pids_of(output))
