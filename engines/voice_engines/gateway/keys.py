"""API keys: read from the file a Secret is mounted at (or an environment variable) at
each call, so a rotated Secret is used as soon as kubelet updates the file, and kept out
of every log line and error message."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path


class MissingKeyError(Exception):
    pass


class Secrets:
    """Every key value read so far, so that text bound for a log or a client can be
    scrubbed of them."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def read(self, key_file: str | None, key_env: str | None) -> str:
        if key_env:
            value = os.environ.get(key_env, "").strip()
            if not value:
                raise MissingKeyError(f"the API key variable {key_env} is not set")
        elif key_file:
            try:
                value = Path(key_file).read_text("utf-8").strip()
            except FileNotFoundError:
                raise MissingKeyError(
                    f"the API key file {key_file} does not exist (is its Secret created?)"
                ) from None
            except OSError as exc:
                raise MissingKeyError(
                    f"the API key file {key_file} cannot be read: {exc.strerror}"
                ) from None
            if not value:
                raise MissingKeyError(f"the API key file {key_file} is empty")
        else:
            raise MissingKeyError("the route names no apiKeyFile or apiKeyEnv")
        with self._lock:
            self._values.add(value)
        return value

    def scrub(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, "[redacted]")
        return text


class RedactingFilter(logging.Filter):
    """Last line of defence on the log handler: adapters never log keys, but a vendor's
    error text or an exception from a library might carry one."""

    def __init__(self, secrets: Secrets) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self.secrets.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            scrubbed = self.secrets.scrub(text)
            if scrubbed != text:
                # Formatters render exc_info afresh; only exc_text can be rewritten.
                record.exc_info, record.exc_text = None, scrubbed
        return True
