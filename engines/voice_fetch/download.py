"""One file into the version folder: streamed, hashed on the fly, resumed with Range,
renamed to its final name only when the digest matches."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urljoin

import urllib3
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity import wait_random_exponential as wait_exp

from voice_contracts.fetch import FetchSpec, FileSpec, redact_url
from voice_fetch.disk import free_bytes
from voice_fetch.errors import FetchError, Reason, RetryableError, is_disk_full
from voice_fetch.manifest import FileRecord
from voice_fetch.part_file import PartFile
from voice_fetch.progress import Progress

if TYPE_CHECKING:
    from minio import Minio

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")
# An attempt that got this much further than any before it resets the failure count;
# a trickle of a few bytes per stall does not.
MIN_PROGRESS = 1 << 20
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 507, 509})


_REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10


def _origin(url: str) -> tuple[str, str, int | None]:
    u = urllib3.util.parse_url(url)
    return (
        u.scheme or "",
        (u.host or "").lower(),
        u.port or {"http": 80, "https": 443}.get(u.scheme or ""),
    )


class OriginHeader:
    """A secret header for requests to one origin only: a redirect to another host (a CDN)
    must not receive the credential, whatever the header's name. Aimed anew for each file,
    whose source decides the header (the spec's auth header, or the Hub's token)."""

    def __init__(self) -> None:
        self.header: tuple[str, str] | None = None
        self.origin: tuple[str, str, int | None] | None = None

    def aim(self, header: tuple[str, str] | None, url: str) -> None:
        self.header, self.origin = header, _origin(url)

    def for_url(self, url: str) -> dict[str, str]:
        if self.header is None or _origin(url) != self.origin:
            return {}
        return {self.header[0]: self.header[1]}


def make_client(spec: FetchSpec) -> urllib3.PoolManager:
    """urllib3 for the bytes: its responses read straight from the socket in reads as
    large as asked for (read1), at a fraction of the CPU that httpx's 64 KiB h11 pieces
    cost per byte. Redirects and retries are ours: redirects to place the secret header
    per origin, retries to count progress."""
    # The read timeout is the stall timeout: no byte for that long and the attempt ends.
    timeout = urllib3.Timeout(connect=min(spec.stall_timeout, 30.0), read=spec.stall_timeout)
    return urllib3.PoolManager(
        timeout=timeout,
        retries=False,
        maxsize=2,
        headers={"User-Agent": "voice-fetch", "Accept-Encoding": "identity"},
    )


class Downloader:
    def __init__(
        self,
        spec: FetchSpec,
        progress: Progress,
        client: urllib3.PoolManager | None,
        auth: OriginHeader | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.progress = progress
        self.client = client
        self.auth = auth or OriginHeader()
        self.on_retry = on_retry or (lambda _message: None)
        self.rehashed_bytes = 0
        self._s3: Minio | None = None

    def fetch(self, index: int, f: FileSpec, final: Path) -> FileRecord:
        final.parent.mkdir(parents=True, exist_ok=True)
        part = PartFile(final)
        label = f"spec.files[{index}] ({f.path})"
        try:
            part.load()
            if part.size:
                log.info("%s: resuming after %d bytes already on disk", label, part.size)
            while True:
                if f.is_file_url:
                    self._copy_local(index, f, part, label)
                elif f.scheme == "s3":
                    self._retrying(index, f, part, label, self._attempt_s3)
                else:
                    self._retrying(index, f, part, label, self._attempt_http)
                digest = part.hasher.hexdigest()
                if digest == f.sha256:
                    break
                if part.inherited:
                    log.warning("%s: digest mismatch after resuming; downloading afresh", label)
                    part.reset()
                    self.progress.set_done(index, 0)
                    continue
                size = part.size
                part.reset()
                raise FetchError(
                    Reason.CHECKSUM_MISMATCH,
                    f"{label}: sha256 {digest} of the {size} bytes downloaded does not match "
                    f"the expected {f.sha256}",
                )
            part.commit()
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            # Free the space: the PVC is shared with other versions of this asset.
            part.path.unlink(missing_ok=True)
            raise FetchError(Reason.DISK_FULL, f"{label}: no space left on the volume") from None
        finally:
            self.rehashed_bytes += part.rehashed
        self.progress.complete(index, part.size)
        return FileRecord(f.path, f.sha256, part.size)

    def _check_space(self, part: PartFile, total: int | None, label: str) -> None:
        if total is None:
            return
        need, free = total - part.size, free_bytes(part.path.parent)
        if need > free:
            part.reset()
            raise FetchError(
                Reason.DISK_FULL,
                f"{label}: needs {need} more bytes, the volume has {free} free",
            )

    def _copy_local(self, index: int, f: FileSpec, part: PartFile, label: str) -> None:
        source = f.local_source
        try:
            src: BinaryIO = source.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise FetchError(Reason.NOT_FOUND, f"{label}: {source} does not exist") from None
        except PermissionError:
            raise FetchError(Reason.UNAUTHORIZED, f"{label}: {source} is not readable") from None
        with src:
            total = os.fstat(src.fileno()).st_size
            part.ensure_consistent()
            if part.size > total:
                part.reset()
            self.progress.set_total(index, total)
            self._check_space(part, total, label)
            src.seek(part.size)
            with part.appender() as append:
                while chunk := src.read(self.spec.chunk_size):
                    append(chunk)
                    self.progress.set_done(index, part.size)

    def _retrying(
        self,
        index: int,
        f: FileSpec,
        part: PartFile,
        label: str,
        attempt: Callable[[int, FileSpec, PartFile, str], None],
    ) -> None:
        high_water = part.size

        def forgive_progress(state: RetryCallState) -> None:
            # Attempts count failures in a row without new bytes: a flaky link that cuts
            # every few MB still finishes a large file, a dead one gives up.
            nonlocal high_water
            if part.size >= high_water + MIN_PROGRESS:
                high_water = part.size
                state.attempt_number = 1

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            message = f"{label}: {exc}; retrying"
            log.warning("%s", message)
            self.on_retry(message)

        retrying = Retrying(
            stop=stop_after_attempt(self.spec.max_attempts),
            wait=wait_exp(multiplier=0.25, max=self.spec.backoff_max),
            retry=retry_if_exception_type(RetryableError),
            after=forgive_progress,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            retrying(attempt, index, f, part, label)
        except RetryableError as exc:
            raise FetchError(
                exc.reason,
                f"{label}: {exc.message} (gave up after {self.spec.max_attempts} "
                "attempts without progress)",
            ) from None

    def _attempt_http(self, index: int, f: FileSpec, part: PartFile, label: str) -> None:
        """http(s) from the url; hf from the Hub's resolve url, asked anew each attempt
        (a 5xx from the Hub is retried like any other)."""
        url = f.url
        if f.scheme == "hf":
            # Imported when needed: huggingface_hub and minio cost a third of a second of
            # start-up that an https download need not pay.
            from voice_fetch import hub

            source = hub.resolve(
                f.url,
                f"spec.files[{index}].url",
                label,
                self.spec.hf_token.get_secret_value() if self.spec.hf_token else None,
                self.spec.hf_endpoint,
            )
            url = source.url
            header = ("Authorization", source.authorization) if source.authorization else None
        elif self.spec.auth_header_value is not None:
            header = (self.spec.auth_header_name, self.spec.auth_header_value.get_secret_value())
        else:
            header = None
        self.auth.aim(header, url)
        self._attempt(index, url, part, label)

    def _attempt_s3(self, index: int, f: FileSpec, part: PartFile, label: str) -> None:
        """One ranged GET of the object, If-Match the ETag the .part's bytes came from."""
        from minio.error import InvalidResponseError, S3Error

        from voice_fetch import s3

        if self._s3 is None:
            self._s3 = s3.make_client(self.spec)
        obj = s3.s3_object(f.url)
        where = f"s3://{obj.bucket}/{obj.key}"
        part.ensure_consistent()
        response = None
        try:
            stat = self._s3.stat_object(obj.bucket, obj.key)
            total = stat.size or 0
            if part.size and (part.validator not in (None, stat.etag) or part.size > total):
                log.warning(
                    "%s: %s changed since the .part was written; starting over", label, where
                )
                part.reset()
            part.validator = stat.etag
            self.progress.set_total(index, total)
            self.progress.set_done(index, part.size)
            if part.size == total:
                return
            self._check_space(part, total, label)
            headers: dict[str, str | list[str] | tuple[str]] | None = (
                {"If-Match": stat.etag} if stat.etag else None
            )
            response = self._s3.get_object(
                obj.bucket, obj.key, offset=part.size, request_headers=headers
            )
            with part.appender() as append:
                for chunk in response.stream(self.spec.chunk_size):
                    append(chunk)
                    self.progress.set_done(index, part.size)
            if part.size < total:
                raise RetryableError(Reason.CONNECTION_ERROR, "the body ended early")
        except (S3Error, InvalidResponseError) as exc:
            if isinstance(exc, S3Error) and exc.code == "PreconditionFailed":
                part.reset()
                raise RetryableError(Reason.HTTP_ERROR, f"{where} changed; starting over") from None
            raise s3.failure(exc, label, where) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._transport_failure(exc, where) from None
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def _transport_failure(self, exc: urllib3.exceptions.HTTPError, where: str) -> RetryableError:
        """What a connection that stalled or broke means, for either source."""
        if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
            return RetryableError(
                Reason.STALLED, f"no data from {where} for {self.spec.stall_timeout:g}s"
            )
        return RetryableError(Reason.CONNECTION_ERROR, f"{type(exc).__name__} talking to {where}")

    def _attempt(self, index: int, url: str, part: PartFile, label: str) -> None:
        assert self.client is not None
        part.ensure_consistent()
        headers = {}
        if part.size:
            headers["Range"] = f"bytes={part.size}-"
            if part.validator:
                # The server sends the whole file (200) if it changed since.
                headers["If-Range"] = part.validator
        where = redact_url(url)
        response = None
        try:
            response = self._get(url, headers, label)
            where = redact_url(response.url or url)
            if response.status == 416 and part.size:
                if _unsatisfied_total(response) == part.size:
                    return  # the .part already holds the whole file
                part.reset()
                raise RetryableError(Reason.HTTP_ERROR, "range not satisfiable; starting over")
            _check_status(response, label, where)
            self._receive(response, index, part, label, where)
        except urllib3.exceptions.HTTPError as exc:
            raise self._transport_failure(exc, where) from None
        finally:
            if response is not None:
                response.close()  # an unfinished body closes its connection too

    def _get(self, url: str, headers: dict[str, str], label: str) -> urllib3.BaseHTTPResponse:
        """GET, following redirects; the secret header only where it is aimed."""
        assert self.client is not None
        for _ in range(MAX_REDIRECTS + 1):
            response = self.client.request(
                "GET",
                url,
                headers={**self.client.headers, **headers, **self.auth.for_url(url)},
                redirect=False,
                preload_content=False,
                decode_content=False,
                enforce_content_length=False,  # the body's length is checked below
            )
            location = response.headers.get("Location")
            if response.status not in _REDIRECTS or not location:
                response.url = url
                return response
            response.drain_conn()
            response.release_conn()
            url = urljoin(url, location)
        raise FetchError(Reason.HTTP_ERROR, f"{label}: more than {MAX_REDIRECTS} redirects")

    def _receive(
        self,
        response: urllib3.BaseHTTPResponse,
        index: int,
        part: PartFile,
        label: str,
        where: str,
    ) -> None:
        """The body of an accepted answer, appended to the .part file."""
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            raise FetchError(
                Reason.HTTP_ERROR,
                f"{label}: {where} answered with Content-Encoding {encoding}",
            )
        start, total = _body_span(response)
        if start != part.size:
            if start != 0:
                part.reset()
                raise RetryableError(Reason.HTTP_ERROR, "server sent an unexpected range")
            part.reset()  # a 200: the whole file again, from the first byte
        part.validator = _validator(response)
        self.progress.set_total(index, total)
        self.progress.set_done(index, part.size)
        self._check_space(part, total, label)
        with part.appender() as append:
            # read1: what the socket holds, up to chunk_size, in one read; a fuller read
            # would hold back received bytes that a cut connection then throws away.
            while chunk := response.read1(self.spec.chunk_size):
                append(chunk)
                self.progress.set_done(index, part.size)
        if total is not None and part.size < total:
            raise RetryableError(Reason.CONNECTION_ERROR, "the body ended early")


def _check_status(response: urllib3.BaseHTTPResponse, label: str, where: str) -> None:
    code = response.status
    if code in (200, 206):
        return
    text = f"{label}: HTTP {code} from {where}"
    if code in (404, 410):
        raise FetchError(Reason.NOT_FOUND, text)
    if code in (401, 403):
        raise FetchError(Reason.UNAUTHORIZED, text)
    if code in _RETRY_STATUSES or code >= 500:
        raise RetryableError(Reason.HTTP_ERROR, f"HTTP {code} from {where}")
    raise FetchError(Reason.HTTP_ERROR, text)


def _body_span(response: urllib3.BaseHTTPResponse) -> tuple[int, int | None]:
    """(offset of the body's first byte in the file, size of the file if known)."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        m = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if not m:
            raise RetryableError(Reason.HTTP_ERROR, "206 without a usable Content-Range")
        start, end, size = m.groups()
        return int(start), int(size) if size != "*" else int(end) + 1
    return 0, int(length) if length and length.isdigit() else None


def _unsatisfied_total(response: urllib3.BaseHTTPResponse) -> int | None:
    m = _UNSATISFIED_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    return int(m.group(1)) if m else None


def _validator(response: urllib3.BaseHTTPResponse) -> str | None:
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag  # If-Range accepts only strong validators
    return response.headers.get("Last-Modified")
