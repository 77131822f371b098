"""Audio at the gateway's edges: uploads checked and normalized to 16 kHz mono WAV (what
every speech-to-text provider takes), and reply PCM brought to one sample rate whatever
rate each provider speaks at."""

from __future__ import annotations

import numpy as np
import soxr

from voice_engines.common.audio import decode_audio, encode, to_mono_at
from voice_engines.common.errors import ApiError

STT_RATE = 16_000


def normalize_upload(data: bytes, max_seconds: float, field: str = "file") -> tuple[bytes, float]:
    """(16 kHz mono 16-bit WAV, seconds). 400/415 for empty or undecodable uploads, 413
    for long ones. CPU work: run it off the event loop."""
    samples, rate = decode_audio(data, field, max_seconds)
    seconds = samples.shape[0] / rate
    return encode(to_mono_at(samples, rate, STT_RATE), STT_RATE, "wav"), seconds


def pcm_to_wav(pcm: bytes, rate: int) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return encode(samples, rate, "wav")


def pcm_seconds(pcm_bytes: int, rate: int) -> float:
    return pcm_bytes / 2 / rate


class PcmResampler:
    """16-bit mono PCM pieces from rate_in to rate_out, as they arrive. A piece may end in
    the middle of a sample (HTTP chunks fall anywhere): the odd byte waits for the next."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self._stream = (
            soxr.ResampleStream(rate_in, rate_out, 1, dtype="int16")
            if rate_in != rate_out
            else None
        )
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        data = self._carry + data
        whole = len(data) - len(data) % 2
        self._carry = data[whole:]
        if self._stream is None:
            return data[:whole]
        samples = np.frombuffer(data[:whole], dtype="<i2")
        return self._stream.resample_chunk(samples).astype("<i2").tobytes()

    def flush(self) -> bytes:
        if self._stream is None:
            return b""
        tail = self._stream.resample_chunk(np.zeros(0, dtype="<i2"), last=True)
        return tail.astype("<i2").tobytes()


def pcm_utterance(pcm: bytes, rate: int) -> tuple[bytes, float]:
    """Streamed 16-bit mono PCM at rate as (16 kHz mono WAV, seconds)."""
    if len(pcm) < 2:
        raise ApiError(400, "empty_audio", "no audio arrived before the end of the utterance")
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float32)
    samples /= 32768.0
    return encode(to_mono_at(samples, rate, STT_RATE), STT_RATE, "wav"), samples.shape[0] / rate
