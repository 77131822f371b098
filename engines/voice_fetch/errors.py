"""The fetcher's failures. Reasons, exit codes and the error types are the contract with
the operator (voice_contracts.fetch); what is here only the fetcher needs."""

from __future__ import annotations

import errno

from voice_contracts.fetch import FetchError, InvalidSpecError, Reason

__all__ = [
    "FetchError",
    "InvalidSpecError",
    "Reason",
    "RetryableError",
    "Terminated",
    "is_disk_full",
]


class RetryableError(Exception):
    """One attempt failed in a way that another attempt may not."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Terminated(BaseException):
    """Raised from the SIGTERM handler so `with` blocks close files on the way out."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
