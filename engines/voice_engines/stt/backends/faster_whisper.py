"""faster-whisper (CTranslate2), loading a CTranslate2 model folder."""

from __future__ import annotations

import numpy as np

from voice_engines.common.device import resolve_device
from voice_engines.stt.backends.base import SAMPLE_RATE, Segment, Transcript
from voice_engines.stt.settings import SttEngineSettings


class FasterWhisperBackend:
    def __init__(self, settings: SttEngineSettings) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel

        path = settings.model_path
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(f"STT_MODEL_PATH {path} is not a CTranslate2 model folder")
        self.device = resolve_device(
            settings.stt_device, ctranslate2.get_cuda_device_count() > 0, "STT_DEVICE"
        )
        self._model = WhisperModel(
            str(path),
            device=self.device,
            compute_type=settings.stt_compute_type,
            cpu_threads=settings.stt_threads,
            # One CTranslate2 worker per concurrent inference the engine allows.
            num_workers=settings.engine_max_concurrency,
        )
        self._beam_size = settings.stt_beam_size
        self.multilingual = bool(self._model.model.is_multilingual)

    def transcribe(
        self, audio: np.ndarray, language: str | None, temperature: float, prompt: str | None
    ) -> Transcript:
        segments, info = self._model.transcribe(
            audio,
            language=language,
            temperature=temperature,
            beam_size=self._beam_size,
            initial_prompt=prompt or None,
            vad_filter=False,
        )
        parts = [
            Segment(
                start=round(s.start, 3),
                end=round(s.end, 3),
                text=s.text.strip(),
                avg_logprob=s.avg_logprob,
                no_speech_prob=s.no_speech_prob,
            )
            for s in segments  # decoding happens while this generator is consumed
            if s.text.strip()
        ]
        return Transcript(
            text=" ".join(p.text for p in parts),
            language=info.language,
            duration=len(audio) / SAMPLE_RATE,
            segments=parts,
        )
