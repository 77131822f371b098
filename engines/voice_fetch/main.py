"""Entry point `voice-fetch`: environment in, files + manifest + status out, exit code.

Exit codes (the operator's Job has a small backoffLimit, so they say whether a retry
can help): 0 verified and reported; 2 invalid spec; 3 checksum mismatch; 4 disk full;
5 not found / unauthorized; 1 anything else; 143 stopped by SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from voice_contracts.fetch import (
    DOWNLOADING,
    FAILED,
    VERIFIED,
    ExitCode,
    FetchError,
    FetchSpec,
    InvalidSpecError,
    Reason,
    exit_code_for,
    load_spec,
    report_mode_default,
    secret_values,
)
from voice_fetch.errors import Terminated, is_disk_full
from voice_fetch.progress import Progress
from voice_fetch.report import (
    DownloadState,
    KubeSink,
    LogSink,
    Reporter,
    Sink,
)

log = logging.getLogger("voice_fetch")


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line)


class RedactSecret(logging.Filter):
    """Second line of defence: no message should hold a secret, but if one does, the
    value is cut out before the line is written."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(s in text for s in self.secrets):
            for secret in self.secrets:
                text = text.replace(secret, "<redacted>")
            record.msg, record.args = text, None
        return True


def configure_logging(secrets: list[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    if secrets:
        handler.addFilter(RedactSecret(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # Their INFO lines carry full urls, query strings (presigned tokens) included.
    for noisy in ("httpx", "httpx2", "httpcore", "kubernetes", "urllib3", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def make_sink(mode: str, asset: str, namespace: str) -> Sink:
    if mode == "kube":
        return KubeSink(asset, namespace)
    return LogSink(asset, namespace)


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise Terminated()


def report_invalid_spec(env: Mapping[str, str], error: InvalidSpecError) -> None:
    """Say what is wrong on the asset when at least the identity is usable."""
    asset, namespace, version = (
        env.get(k, "") for k in ("FETCH_ASSET", "FETCH_NAMESPACE", "FETCH_VERSION")
    )
    if not (asset and namespace and version):
        return
    mode = env.get("FETCH_REPORT") or report_mode_default(env)
    try:
        sink = make_sink(mode, asset, namespace)
    except Exception as exc:
        log.error("cannot report the invalid spec: %s", type(exc).__name__)
        return
    reporter = Reporter(sink, version, 1.0, lambda: (0, 0), final_attempts=3, backoff_max=2.0)
    reporter.finish(DownloadState(FAILED, Reason.INVALID_SPEC, error.message))


def fetch(spec: FetchSpec, reporter: Reporter, progress: Progress) -> DownloadState:
    def on_state(message: str) -> None:
        reporter.set_state(DOWNLOADING, DOWNLOADING, message)

    # Imported here so that a bad spec is reported without loading httpx or ollama.
    if spec.ollama_model:
        from voice_fetch.ollama_pull import pull_version

        records = pull_version(spec, progress, on_state)
    else:
        from voice_fetch.version_folder import fetch_version

        records = fetch_version(spec, progress, on_state)
    size = sum(r.bytes for r in records)
    return DownloadState(
        VERIFIED,
        VERIFIED,
        f"{len(records)} files verified, {size} bytes",
        done_bytes=size,
        total_bytes=size,
        files=tuple(records),
    )


def run(env: Mapping[str, str]) -> int:
    configure_logging(secret_values(env))
    try:
        spec = load_spec(env)
    except InvalidSpecError as exc:
        log.error("invalid spec: %s", exc.message)
        report_invalid_spec(env, exc)
        return exc.exit_code

    try:
        sink = make_sink(spec.report, spec.asset, spec.namespace)
    except Exception as exc:
        log.error("cannot set up status reporting (%s): %s", spec.report, exc)
        return ExitCode.OTHER
    progress = Progress()
    reporter = Reporter(
        sink,
        spec.version,
        spec.report_interval,
        progress.snapshot,
        final_attempts=spec.max_attempts,
        backoff_max=spec.backoff_max,
    )
    reporter.start()
    try:
        final = fetch(spec, reporter, progress)
        code = ExitCode.OK
    except FetchError as exc:
        final, code = _failed(exc.reason, exc.message, progress), exc.exit_code
    except OSError as exc:
        reason = Reason.DISK_FULL if is_disk_full(exc) else Reason.INTERNAL_ERROR
        message = f"{exc.strerror or type(exc).__name__}: {exc.filename or spec.dest}"
        final, code = _failed(reason, message, progress), exit_code_for(reason)
    except Terminated:
        # The pod is going away (Job deleted, node drained): keep the .part files for
        # the next pod and leave the status to whoever stopped us.
        log.warning("terminated; partial files kept for the next attempt")
        return ExitCode.TERMINATED
    except Exception as exc:
        log.exception("unexpected error")
        final = _failed(Reason.INTERNAL_ERROR, f"unexpected {type(exc).__name__}", progress)
        code = ExitCode.OTHER

    if final.phase == FAILED:
        log.error("%s: %s", final.reason, final.message)
    else:
        log.info("%s", final.message)
    if not reporter.finish(final) and code == ExitCode.OK:
        return ExitCode.OTHER
    return code


def _failed(reason: Reason, message: str, progress: Progress) -> DownloadState:
    done, total = progress.snapshot()
    return DownloadState(FAILED, reason, message, done_bytes=done, total_bytes=total)


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.exit(run(os.environ))


if __name__ == "__main__":
    main()
