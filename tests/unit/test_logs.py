"""Every log line's time is RFC 3339 UTC with milliseconds, in the operator's JSON and
plain formats alike (the engines' lines are checked on a real engine process)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest

from voice_contracts.logs import log_time
from voice_operator.logs import configure_logging

pytestmark = pytest.mark.unit

RFC3339_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
# 2026-12-02T07:20:01.123Z
CREATED = 1796196001.1234


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def record() -> logging.LogRecord:
    made = logging.LogRecord(
        "voice_operator.x", logging.INFO, __file__, 1, "reconciled", None, None
    )
    made.created, made.msecs = CREATED, 123.4
    return made


def kopf_formatter(root: logging.Logger) -> logging.Formatter:
    [formatter] = [h.formatter for h in root.handlers if type(h).__name__ == "_KopfStreamHandler"]
    assert formatter is not None
    return formatter


def test_the_time_format_is_rfc3339_utc_with_milliseconds():
    assert log_time(CREATED) == "2026-12-02T07:20:01.123Z"
    assert log_time(0) == "1970-01-01T00:00:00.000Z"


def test_the_operators_json_lines_carry_that_time(root_logging):
    configure_logging(json_lines=True)
    line = json.loads(kopf_formatter(root_logging).format(record()))
    assert line["timestamp"] == "2026-12-02T07:20:01.123Z"
    assert line["message"] == "reconciled"


def test_the_operators_plain_lines_carry_that_time(root_logging):
    configure_logging(json_lines=False)
    line = kopf_formatter(root_logging).format(record())
    assert line.startswith("[2026-12-02T07:20:01.123Z] "), line
    assert re.fullmatch(rf"\[{RFC3339_MS}\] voice_operator\S* +\[INFO +\] reconciled", line)
