"""The endpointer on real speech with the real Silero model (no engines): pauses make
turns, short bursts are noise, long speech is cut, and the pause event carries the audio
the final transcript can be decoded from in advance; and where playback of a reply is
when it is interrupted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from voice_contracts.routes import TurnDetection
from voice_engines.demo.stack import EXAMPLE_WAV
from voice_engines.gateway.streaming import Playback
from voice_engines.gateway.turns import (
    Endpointer,
    NoiseIgnored,
    SileroScorer,
    SpeechConfirmed,
    SpeechPaused,
    SpeechStarted,
    TurnEvent,
    UtteranceEnded,
)

pytestmark = pytest.mark.unit
RATE = 16_000


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    samples, rate = sf.read(Path(EXAMPLE_WAV), dtype="float32")
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    return (soxr.resample(samples, rate, RATE) * 32767).astype("<i2")


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype="<i2")


def events(audio: np.ndarray, **config: object) -> list[TurnEvent]:
    endpointer = Endpointer(TurnDetection(mode="vad", **config), SileroScorer())  # type: ignore[arg-type]
    pcm = audio.tobytes()
    found: list[TurnEvent] = []
    for offset in range(0, len(pcm), 640):  # frames that do not fall on window bounds
        found.extend(endpointer.feed(pcm[offset : offset + 640]))
    return found


def test_two_questions_with_a_pause_are_two_utterances(question: np.ndarray) -> None:
    found = events(np.concatenate([silence(0.5), question, silence(1.0), question, silence(1)]))
    ended = [e for e in found if isinstance(e, UtteranceEnded)]
    assert [e.reason for e in ended] == ["silence", "silence"]
    kinds = [type(e) for e in found if not isinstance(e, SpeechPaused)]
    assert kinds == [SpeechStarted, SpeechConfirmed, UtteranceEnded] * 2
    for utterance in ended:
        seconds = len(utterance.pcm) / 2 / RATE
        # The whole question (with its pre-roll), without the silence that ended it.
        assert len(question) / RATE - 0.6 < seconds < len(question) / RATE + 0.4
        assert utterance.at_ms - utterance.speech_end_ms >= 500
        # Nothing was said after the last pause: its audio is the utterance's.
        assert utterance.same_as_paused
    last_pause = [e for e in found if isinstance(e, SpeechPaused)][-1]
    assert last_pause.pcm == ended[-1].pcm


def test_the_silence_setting_decides_what_is_one_utterance(question: np.ndarray) -> None:
    audio = np.concatenate([question, silence(0.7), question, silence(2.5)])
    assert len([e for e in events(audio) if isinstance(e, UtteranceEnded)]) == 2
    assert len([e for e in events(audio, silence_ms=2000) if isinstance(e, UtteranceEnded)]) == 1


def test_a_burst_shorter_than_the_minimum_is_noise(question: np.ndarray) -> None:
    start = int(0.3 * RATE)
    burst = question[start : start + int(0.12 * RATE)]
    found = events(np.concatenate([silence(0.5), burst, silence(1.0)]), min_speech_ms=250)
    assert not [e for e in found if isinstance(e, SpeechConfirmed | UtteranceEnded)]
    assert [type(e) for e in found] in ([], [SpeechStarted, NoiseIgnored])


def test_long_speech_is_cut_at_the_maximum(question: np.ndarray) -> None:
    found = events(np.concatenate([question] * 3), max_utterance_ms=1000, silence_ms=2000)
    ended = [e for e in found if isinstance(e, UtteranceEnded)]
    assert ended and ended[0].reason == "max_length"
    assert len(ended[0].pcm) / 2 / RATE <= 1.0 + 0.05


def test_playback_keeps_whole_sentences_and_the_heard_part_of_the_current_one() -> None:
    playback = Playback(rate=1000)  # 2000 bytes of PCM = 1 s
    playback.sentence(0, "One two three four.", now=0.0)
    playback.audio(2000, now=0.0)  # plays 0-1 s
    playback.sentence(1, "Five six seven eight.", now=0.1)
    playback.audio(4000, now=0.1)  # plays 1-3 s
    assert playback.sent_seconds == 3.0
    assert playback.heard_text(now=0.5) == "One two"
    assert playback.heard_text(now=2.0) == "One two three four. Five six"
    assert playback.played_seconds(now=2.0) == pytest.approx(2.0)
    assert playback.heard_text(now=10.0) == "One two three four. Five six seven eight."
