"""WebSocket /v1/twilio: a phone call through Twilio Media Streams (a bidirectional
<Connect><Stream>), speaking Twilio's documented messages. The call is a live
conversation like /v1/stream, always with voice activity detection (a phone sends no end
of utterance).

Twilio -> gateway (JSON text frames)
  {"event": "connected", "protocol", "version"}
  {"event": "start", "streamSid", "start": {"streamSid", "callSid", "mediaFormat":
   {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}, ...}}
  {"event": "media", "streamSid", "media": {"payload": base64 8 kHz mu-law, ...}}
  {"event": "mark", "streamSid", "mark": {"name"}}   a mark we sent has been played
  {"event": "stop", "streamSid", "stop": {...}}       the call ended
Gateway -> Twilio
  {"event": "media", "streamSid", "media": {"payload"}}  the reply, 8 kHz mu-law
  {"event": "mark", "streamSid", "mark": {"name"}}      after each sentence's audio
  {"event": "clear", "streamSid"}                        barge-in: drop the audio queued

mu-law is encoded and decoded by libsndfile (soundfile's RAW/ULAW)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import logging
from typing import Any

import numpy as np
import soundfile as sf
from fastapi import WebSocket, WebSocketDisconnect

from voice_engines.common.errors import ApiError
from voice_engines.gateway.audio import STT_RATE, PcmResampler
from voice_engines.gateway.pipeline import Pipeline
from voice_engines.gateway.routes import RoutesWatcher
from voice_engines.gateway.streaming import Sender, StartMessage, StreamSession, guarded

log = logging.getLogger(__name__)

PHONE_RATE = 8000


def mulaw_to_pcm(data: bytes) -> bytes:
    samples, _ = sf.read(
        io.BytesIO(data),
        dtype="int16",
        format="RAW",
        subtype="ULAW",
        samplerate=PHONE_RATE,
        channels=1,
    )
    return np.asarray(samples, dtype="<i2").tobytes()


def pcm_to_mulaw(pcm: bytes) -> bytes:
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    out = io.BytesIO()
    sf.write(out, samples, PHONE_RATE, format="RAW", subtype="ULAW")
    return out.getvalue()


class TwilioSender(Sender):
    """The stream's messages as Twilio's: audio as media, each sentence closed by a mark,
    an interruption as clear; the rest has no place on a phone line."""

    def __init__(self, websocket: WebSocket) -> None:
        super().__init__(websocket)
        self.stream_sid = ""
        self.marks = 0

    async def _event(self, payload: dict[str, Any]) -> None:
        await super().json({**payload, "streamSid": self.stream_sid})

    async def audio(self, pcm: bytes) -> None:
        payload = base64.b64encode(pcm_to_mulaw(pcm)).decode("ascii")
        await self._event({"event": "media", "media": {"payload": payload}})

    async def json(self, payload: dict[str, Any]) -> None:
        kind = payload.get("type")
        if kind == "interrupted":
            await self._event({"event": "clear"})
        elif kind == "done" or (kind == "sentence" and payload.get("index", 0) > 0):
            # Before a sentence's audio the previous one is over; done closes the last.
            self.marks += 1
            await self._event({"event": "mark", "mark": {"name": f"reply-{self.marks}"}})

    async def error(self, error: ApiError) -> None:
        log.warning("call turn failed: %s %s", error.code, error.message)


class TwilioSession(StreamSession):
    def __init__(self, websocket: WebSocket, pipeline: Pipeline, watcher: RoutesWatcher) -> None:
        super().__init__(websocket, pipeline, watcher)
        self.sender = self.twilio = TwilioSender(websocket)
        self._phone(self.start.session_id)

    def _phone(self, session_id: str | None) -> None:
        self.start = StartMessage(
            type="start",
            session_id=session_id,
            sample_rate=PHONE_RATE,
            output_sample_rate=PHONE_RATE,
            turn_detection="vad",
        )
        self.turns = self._turn_detection("vad")
        self.endpointer = None
        self.resampler = PcmResampler(PHONE_RATE, STT_RATE)

    async def run(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None:
                    log.warning("Twilio sent a binary frame; its protocol is JSON text")
                    continue
                if not await self._event(text):
                    return
        finally:
            for task in self._tasks():
                task.cancel()

    async def _event(self, text: str) -> bool:
        """Handles one message; False when the call is over."""
        try:
            message = json.loads(text)
        except ValueError:
            log.warning("Twilio sent a frame that is not JSON")
            return True
        event = message.get("event") if isinstance(message, dict) else None
        if event == "media":
            media = message.get("media") or {}
            try:
                audio = base64.b64decode(media.get("payload") or "", validate=True)
            except (binascii.Error, TypeError):
                log.warning("a media message with a payload that is not base64")
                return True
            if media.get("track", "inbound") == "inbound" and audio:
                try:
                    await self._take_audio(mulaw_to_pcm(audio))
                except ApiError as error:
                    await self.sender.error(error)
        elif event == "start":
            start = message.get("start") or {}
            self.twilio.stream_sid = str(message.get("streamSid") or start.get("streamSid") or "")
            media_format = start.get("mediaFormat") or {}
            if media_format and (
                media_format.get("encoding") != "audio/x-mulaw"
                or int(media_format.get("sampleRate", PHONE_RATE)) != PHONE_RATE
            ):
                log.error("Twilio media format %s is not 8 kHz mu-law", media_format)
                return False
            call = start.get("callSid")
            self._phone(str(call) if call else self.start.session_id)
        elif event == "stop":
            return False
        # connected, mark (played), dtmf: nothing to do.
        return True


async def serve_twilio(websocket: WebSocket, pipeline: Pipeline, watcher: RoutesWatcher) -> None:
    async with guarded(websocket, "call stream", log):
        await websocket.accept()
        with contextlib.suppress(WebSocketDisconnect):
            await TwilioSession(websocket, pipeline, watcher).run()
