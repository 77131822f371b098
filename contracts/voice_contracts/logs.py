"""The time format of every log line the project's programs write: RFC 3339 in UTC with
milliseconds (`2026-12-02T07:20:01.123Z`), so lines from the operator, the engines and the
gateway sort and join on one clock however a log pipeline parses them."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime


def log_time(created: float) -> str:
    """A record's `created` (seconds since the epoch) as RFC 3339 UTC, milliseconds."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def use_log_time(formatter: logging.Formatter) -> None:
    """Makes a text formatter's %(asctime)s the same RFC 3339 UTC milliseconds."""
    formatter.converter = time.gmtime
    formatter.datefmt = None
    formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
    formatter.default_msec_format = "%s.%03dZ"
