"""Audio in and out: decoding uploads with libsndfile (soundfile), mono mixdown and
resampling with soxr, WAV/PCM/FLAC encoding."""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import soundfile as sf
import soxr

from voice_engines.common.errors import ApiError

# What an upload may declare. Below 8 kHz there is no speech to hear; the upper bound and
# the channel count stop a header from making decoding and resampling cost more than the
# audio is worth.
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8


def _unsupported(exc: Exception, field: str) -> ApiError:
    return ApiError(
        415,
        "unsupported_audio",
        "the upload is not audio that can be decoded (WAV, FLAC, OGG, MP3): "
        + str(getattr(exc, "error_string", None) or type(exc).__name__),
        field=field,
    )


def _check_header(audio: sf.SoundFile, max_seconds: float, field: str) -> None:
    rate, channels = audio.samplerate, audio.channels
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ApiError(
            400,
            "unsupported_sample_rate",
            f"the audio's sample rate is {rate} Hz; {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz "
            "is accepted",
            field=field,
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise ApiError(
            400,
            "unsupported_channels",
            f"the audio has {channels} channels; at most {MAX_CHANNELS} are accepted",
            field=field,
        )
    # Checked before decoding: a small compressed upload can stand for hours of samples.
    seconds = audio.frames / rate
    if seconds > max_seconds:
        raise ApiError(
            413,
            "audio_too_long",
            f"audio is {seconds:.1f} s long; the limit is {max_seconds:g} s",
            field=field,
        )


def decode_audio(
    data: bytes, field: str = "file", max_seconds: float = math.inf
) -> tuple[np.ndarray, int]:
    """Returns (frames x channels float32 samples in [-1, 1], sample rate). 415 if
    libsndfile cannot read it; 400 for rates or channel counts out of bounds and for NaN
    or infinite samples; 413 beyond max_seconds."""
    if not data:
        raise ApiError(400, "empty_upload", "the uploaded audio is empty", field=field)
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio:
            _check_header(audio, max_seconds, field)
            samples = audio.read(dtype="float32", always_2d=True)
            rate = audio.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise _unsupported(exc, field) from None
    if samples.shape[0] == 0:
        raise ApiError(400, "empty_audio", "the uploaded audio has no samples", field=field)
    if not np.isfinite(samples).all():
        raise ApiError(400, "invalid_audio", "the audio has NaN or infinite samples", field=field)
    # Float formats may hold any value; speech models expect full scale at most.
    np.clip(samples, -1.0, 1.0, out=samples)
    return samples, int(rate)


def to_mono(samples: np.ndarray) -> np.ndarray:
    if samples.ndim == 1:
        return samples
    return samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    if rate == target_rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    return soxr.resample(samples, rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def to_mono_at(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    return resample(to_mono(samples), rate, target_rate)


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """Whole-file encoding: fmt is "wav" (16-bit PCM), "flac" or "pcm" (raw s16le)."""
    if fmt == "pcm":
        return pcm16(samples)
    buffer = io.BytesIO()
    subtype = "PCM_16"
    sf.write(buffer, samples, rate, format=fmt.upper(), subtype=subtype)
    return buffer.getvalue()


def streaming_wav_header(rate: int, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV header for a stream of unknown length. libsndfile only writes
    headers for finished files, so this one is spelled out: the RIFF and data sizes carry
    the 0xFFFFFFFF placeholder that players and decoders read as "until end of stream"."""
    block_align = channels * 2
    return b"".join(
        [
            b"RIFF",
            struct.pack("<I", 0xFFFFFFFF),
            b"WAVEfmt ",
            struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block_align, block_align, 16),
            b"data",
            struct.pack("<I", 0xFFFFFFFF),
        ]
    )
