"""whisper.cpp through pywhispercpp, loading a ggml model file."""

from __future__ import annotations

import threading

import numpy as np

from voice_engines.stt.backends.base import SAMPLE_RATE, Segment, Transcript
from voice_engines.stt.settings import SttSettings


class WhisperCppBackend:
    def __init__(self, settings: SttSettings) -> None:
        from pywhispercpp.model import Model

        path = settings.stt_model_path
        if not path.is_file():
            raise FileNotFoundError(f"STT_MODEL_PATH {path} is not a ggml model file")
        beam = settings.stt_beam_size
        self._model = Model(
            str(path),
            params_sampling_strategy=1 if beam > 1 else 0,
            redirect_whispercpp_logs_to=None,
            n_threads=settings.stt_threads,
            print_progress=False,
            print_realtime=False,
            beam_search={"beam_size": beam if beam > 1 else -1, "patience": -1.0},
        )
        import _pywhispercpp as pw

        self.multilingual = bool(pw.whisper_is_multilingual(self._model._ctx))
        # One whisper context decodes one stream at a time, and its parameters are
        # shared state between calls.
        self._lock = threading.Lock()

    def transcribe(
        self, audio: np.ndarray, language: str | None, temperature: float, prompt: str | None
    ) -> Transcript:
        with self._lock:
            segments = self._model.transcribe(
                audio,
                language=language or "auto",
                detect_language=False,
                temperature=temperature,
                initial_prompt=prompt or "",
            )
            detected = language or self._detected_language()
        parts = [
            # whisper.cpp counts time in 10 ms steps.
            Segment(start=s.t0 / 100, end=s.t1 / 100, text=s.text.strip())
            for s in segments
            if s.text.strip()
        ]
        return Transcript(
            text=" ".join(p.text for p in parts),
            language=detected,
            duration=len(audio) / SAMPLE_RATE,
            segments=parts,
        )

    def _detected_language(self) -> str:
        import _pywhispercpp as pw

        return str(pw.whisper_lang_str(pw.whisper_full_lang_id(self._model._ctx)))
