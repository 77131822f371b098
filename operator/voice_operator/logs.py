"""The operator's log lines: kopf's formatters, with the project's one time format
(RFC 3339 UTC, milliseconds) instead of kopf's microsecond `+00:00` (JSON) and local
`YYYY-MM-DD HH:MM:SS,mmm`. Plain lines are kopf's full text format (time, logger, level,
message): its bare-message format has no time at all."""

from __future__ import annotations

import logging
from datetime import datetime

import kopf
from pythonjsonlogger.json import JsonEncoder, JsonFormatter

from voice_contracts.logs import log_time, use_log_time


def configure_logging(*, json_lines: bool, verbose: bool = False) -> None:
    kopf.configure(
        verbose=verbose, log_format=kopf.LogFormat.JSON if json_lines else kopf.LogFormat.FULL
    )
    for handler in logging.getLogger().handlers:
        if handler.formatter is not None:
            _use_log_time(handler.formatter)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)


def _use_log_time(formatter: logging.Formatter) -> None:
    if isinstance(formatter, JsonFormatter):
        # kopf's JSON lines carry the record's time as a datetime in "timestamp"; the
        # encoder writes every datetime, that one included.
        fallback = JsonEncoder().default

        def encode(value: object) -> object:
            if isinstance(value, datetime) and value.tzinfo is not None:
                return log_time(value.timestamp())
            return fallback(value)

        formatter.json_default = encode
    else:
        use_log_time(formatter)
