"""Failure reasons shared with the operator's conditions, and the exit code of each."""

from __future__ import annotations

import errno
from enum import StrEnum


class Reason(StrEnum):
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    HTTP_ERROR = "HTTPError"
    NOT_FOUND = "NotFound"
    UNAUTHORIZED = "Unauthorized"
    DISK_FULL = "DiskFull"
    STALLED = "Stalled"
    CONNECTION_ERROR = "ConnectionError"
    INVALID_SPEC = "InvalidSpec"
    OLLAMA_PULL_FAILED = "OllamaPullFailed"
    # Anything the list above does not name (permission denied on the PVC, a bug): the
    # operator treats it like any other failure, and the message says what happened.
    INTERNAL_ERROR = "InternalError"


EXIT_OK = 0
EXIT_OTHER = 1
EXIT_INVALID_SPEC = 2
EXIT_CHECKSUM = 3
EXIT_DISK_FULL = 4
EXIT_NOT_FOUND = 5
# 128 + SIGTERM, the shell convention: the pod was stopped, nothing was reported.
EXIT_TERMINATED = 143

_EXIT_BY_REASON = {
    Reason.INVALID_SPEC: EXIT_INVALID_SPEC,
    Reason.CHECKSUM_MISMATCH: EXIT_CHECKSUM,
    Reason.DISK_FULL: EXIT_DISK_FULL,
    Reason.NOT_FOUND: EXIT_NOT_FOUND,
    Reason.UNAUTHORIZED: EXIT_NOT_FOUND,
}


def exit_code_for(reason: Reason) -> int:
    return _EXIT_BY_REASON.get(reason, EXIT_OTHER)


class FetchError(Exception):
    """A failure with its reason; the message is shown to users, so it never holds secrets."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.reason)


class InvalidSpecError(FetchError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(Reason.INVALID_SPEC, f"{field}: {problem}")
        self.field = field


class Terminated(BaseException):
    """Raised from the SIGTERM handler so `with` blocks close files on the way out."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
