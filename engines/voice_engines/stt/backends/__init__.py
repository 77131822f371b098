"""Speech-to-text backends; each loads its model once and is safe to call from the
executor's worker threads."""

from __future__ import annotations

from voice_engines.stt.backends.base import Segment, SpeechToText, Transcript
from voice_engines.stt.settings import SttEngineSettings

__all__ = ["Segment", "SpeechToText", "Transcript", "load_backend"]


def load_backend(settings: SttEngineSettings) -> SpeechToText:
    if settings.stt_backend == "whispercpp":
        from voice_engines.stt.backends.whispercpp import WhisperCppBackend

        return WhisperCppBackend(settings)
    from voice_engines.stt.backends.faster_whisper import FasterWhisperBackend

    return FasterWhisperBackend(settings)
