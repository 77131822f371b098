"""whisper.cpp through pywhispercpp, loading a ggml model file."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import numpy as np

from voice_engines.common.device import resolve_device
from voice_engines.convert.ct2_to_ggml import GGML_MAGIC
from voice_engines.stt.backends.base import SAMPLE_RATE, Segment, Transcript
from voice_engines.stt.settings import SttEngineSettings

# whisper.cpp's own test: multilingual vocabularies have 51865 tokens or more.
MULTILINGUAL_VOCAB = 51865
# whisper.cpp's own default step of its temperature fallback.
DEFAULT_TEMPERATURE_INC = 0.2


def ggml_vocab_size(path: Path) -> int:
    """n_vocab, the first hyper-parameter after the magic in a whisper.cpp model file."""
    with open(path, "rb") as stream:
        magic, n_vocab = struct.unpack("<ii", stream.read(8))
    if magic != GGML_MAGIC:
        raise ValueError(f"{path} is not a whisper.cpp ggml model file")
    return int(n_vocab)


def whispercpp_has_cuda(system_info: str) -> bool:
    """Whether whisper.cpp was built with its CUDA backend (its system info names it)."""
    return "CUDA" in system_info


class WhisperCppBackend:
    def __init__(self, settings: SttEngineSettings) -> None:
        import _pywhispercpp
        from pywhispercpp.model import Model

        path = settings.model_path
        if not path.is_file():
            raise FileNotFoundError(f"STT_MODEL_PATH {path} is not a ggml model file")
        beam = settings.stt_beam_size
        self.device = resolve_device(
            settings.stt_device,
            whispercpp_has_cuda(_pywhispercpp.whisper_print_system_info()),
            "STT_DEVICE",
        )
        self._model = Model(
            str(path),
            context_params={"use_gpu": self.device == "cuda"},
            params_sampling_strategy=1 if beam > 1 else 0,
            redirect_whispercpp_logs_to=None,
            n_threads=settings.stt_threads,
            print_progress=False,
            print_realtime=False,
            beam_search={"beam_size": beam if beam > 1 else -1, "patience": -1.0},
        )
        self.multilingual = ggml_vocab_size(path) >= MULTILINGUAL_VOCAB
        # One whisper context decodes one stream at a time, and its parameters are
        # shared state between calls.
        self._lock = threading.Lock()

    def transcribe(
        self, audio: np.ndarray, language: str | None, temperature: float, prompt: str | None
    ) -> Transcript:
        with self._lock:
            if language is None:
                (language, _), _ = self._model.auto_detect_language(audio)
            segments = self._model.transcribe(
                audio,
                language=language,
                detect_language=False,
                temperature=temperature,
                # whisper.cpp re-decodes a segment it finds doubtful at ever higher
                # temperatures, by sampling: at temperature 0 the caller asked for the
                # one greedy answer, the same every time (as faster-whisper gives it).
                temperature_inc=0.0 if temperature == 0 else DEFAULT_TEMPERATURE_INC,
                initial_prompt=prompt or "",
            )
        parts = [
            # whisper.cpp counts time in 10 ms steps.
            Segment(start=s.t0 / 100, end=s.t1 / 100, text=s.text.strip())
            for s in segments
            if s.text.strip()
        ]
        return Transcript(
            text=" ".join(p.text for p in parts),
            language=language,
            duration=len(audio) / SAMPLE_RATE,
            segments=parts,
        )
