"""s3:// files through minio-py: SigV4 signing, regions, path- or virtual-hosted-style
addressing and ranged GETs, against AWS or any S3-compatible store.

minio-py rather than boto3: botocore pins python-dateutil < 3 while the kubernetes client
(the fetcher's status reports) needs >= 3, so boto3 cannot live in the fetcher's
environment; minio-py needs only urllib3 and speaks the same protocol."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import urllib3
from minio import Minio
from minio.credentials.providers import (
    ChainedProvider,
    EnvAWSProvider,
    IamAwsProvider,
    Provider,
    StaticProvider,
)
from minio.error import InvalidResponseError, S3Error

from voice_contracts.fetch import FetchError, FetchSpec, Reason
from voice_fetch.errors import RetryableError

# AWS itself when no endpoint is given; minio-py picks the regional host from the region.
_AWS = "s3.amazonaws.com"
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchVersion"})
_UNAUTHORIZED = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AllAccessDisabled",
        "AccountProblem",
    }
)
_RETRY = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"})


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str


def s3_object(url: str) -> S3Object:
    """The bucket and key of a valid s3 url (voice_contracts.fetch.url_problem)."""
    bucket, key = url.removeprefix("s3://").split("/", 1)
    return S3Object(bucket, unquote(key))


def make_client(spec: FetchSpec) -> Minio:
    endpoint = urlsplit(spec.s3_endpoint) if spec.s3_endpoint else None
    # Retries are ours (download.Downloader): they count progress, urllib3's would not.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(spec.stall_timeout, 30.0), read=spec.stall_timeout),
        retries=False,
        maxsize=2,
    )
    credentials: Provider | None = None
    if spec.s3_access_key_id is not None and spec.s3_secret_access_key is not None:
        credentials = StaticProvider(
            spec.s3_access_key_id.get_secret_value(),
            spec.s3_secret_access_key.get_secret_value(),
        )
    elif endpoint is None:
        # AWS without a Secret: the pod's own identity (IRSA web identity, instance role).
        credentials = ChainedProvider([EnvAWSProvider(), IamAwsProvider()])
    # Else a public bucket of a self-hosted store: anonymous requests.
    client = Minio(
        endpoint.netloc if endpoint else _AWS,
        secure=endpoint.scheme == "https" if endpoint else True,
        region=spec.s3_region,
        http_client=http,
        credentials=credentials,
    )
    if spec.s3_path_style:
        client.disable_virtual_style_endpoint()
    return client


def failure(exc: S3Error | InvalidResponseError, label: str, where: str) -> Exception:
    """A FetchError for what no retry fixes, else a RetryableError."""
    if isinstance(exc, InvalidResponseError):
        status = exc._code
        if status in (401, 403):
            return FetchError(Reason.UNAUTHORIZED, f"{label}: HTTP {status} from {where}")
        if status == 404:
            return FetchError(Reason.NOT_FOUND, f"{label}: {where} does not exist")
        if status >= 500 or status == 429:
            return RetryableError(Reason.HTTP_ERROR, f"HTTP {status} from {where}")
        return FetchError(Reason.HTTP_ERROR, f"{label}: HTTP {status} from {where}")
    code = exc.code or ""
    if code in _NOT_FOUND:
        return FetchError(Reason.NOT_FOUND, f"{label}: {where} does not exist ({code})")
    if code in _UNAUTHORIZED:
        return FetchError(
            Reason.UNAUTHORIZED,
            f"{label}: the store refused the credentials for {where} ({code}: {exc.message})",
        )
    status = exc.response.status if exc.response is not None else 0
    if code in _RETRY or status >= 500 or status == 429:
        return RetryableError(Reason.HTTP_ERROR, f"{code or 'HTTP ' + str(status)} from {where}")
    return FetchError(Reason.HTTP_ERROR, f"{label}: {code} from {where}: {exc.message}")
