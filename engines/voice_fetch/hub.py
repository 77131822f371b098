"""hf:// files: huggingface_hub parses the url, builds the resolve url and the token's
header, and asks the Hub (HEAD) which commit the revision is and whether the token may
read the file. The bytes then come through our own download (Range, sha256 while
streaming, .part and rename) from the resolve url pinned to that commit, so a resume in a
later pod reads the same bytes even if the branch moved meanwhile.

hf_hub_download is not used for the bytes: it writes into its own cache folder under its
own temporary names and hashes nothing we could check against the spec's sha256 on the
way, so the file would be written twice and verified by reading it back."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx2
from huggingface_hub import get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HfUriError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, parse_hf_uri

from voice_contracts.fetch import FetchError, InvalidSpecError, Reason
from voice_fetch.errors import RetryableError

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class HubFile:
    url: str  # the resolve url at the commit
    commit: str | None
    size: int | None
    authorization: str | None  # the header value for the Hub's own origin


def parse(url: str, field: str) -> tuple[str, str, str | None, str]:
    """(repo type, repo id, revision or None, path in the repo) of an hf url."""
    try:
        uri = parse_hf_uri(url)
    except HfUriError as exc:
        raise InvalidSpecError(field, exc.msg) from None
    if uri.type not in ("model", "dataset", "space"):
        raise InvalidSpecError(field, f"hf url of a {uri.type}: only repos hold model files")
    if not uri.path_in_repo or uri.path_in_repo.endswith("/"):
        raise InvalidSpecError(field, "an hf url must name a file in the repo")
    return uri.type, uri.id, uri.revision, uri.path_in_repo


def resolve(url: str, field: str, label: str, token: str | None, endpoint: str | None) -> HubFile:
    """The file's resolve url at its commit; raises FetchError on what no retry fixes,
    RetryableError on the rest."""
    repo_type, repo_id, revision, filename = parse(url, field)
    wanted = revision or "main"
    at_revision = hf_hub_url(
        repo_id, filename, repo_type=repo_type, revision=wanted, endpoint=endpoint
    )
    # token=False: never a token file or HF_TOKEN from the pod's environment, only ours.
    auth = build_hf_headers(token=token or False).get("authorization")
    where = f"{repo_id}@{wanted}/{filename}"
    try:
        meta = get_hf_file_metadata(
            at_revision, token=token or False, endpoint=endpoint, retry_on_errors=False
        )
    except GatedRepoError:
        raise FetchError(
            Reason.UNAUTHORIZED,
            f"{label}: {repo_id} is a gated repo and the token has not been granted access",
        ) from None
    except RepositoryNotFoundError:
        # The Hub answers 401 for a private repo as for a missing one.
        hint = "" if token else " (no token given: spec.huggingFace.tokenSecretRef)"
        raise FetchError(
            Reason.UNAUTHORIZED if not token else Reason.NOT_FOUND,
            f"{label}: repository {repo_id} not found or not readable with the token{hint}",
        ) from None
    except RevisionNotFoundError:
        raise FetchError(Reason.NOT_FOUND, f"{label}: {repo_id} has no revision {wanted}") from None
    except RemoteEntryNotFoundError:
        raise FetchError(Reason.NOT_FOUND, f"{label}: {where} does not exist") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            raise FetchError(
                Reason.UNAUTHORIZED,
                f"{label}: the Hub refused the token for {where} (HTTP {status}"
                f"{': ' + exc.server_message if exc.server_message else ''})",
            ) from None
        if status in (404, 410):
            raise FetchError(Reason.NOT_FOUND, f"{label}: {where} does not exist") from None
        if status >= 500 or status in _RETRY_STATUSES:
            raise RetryableError(
                Reason.HTTP_ERROR, f"HTTP {status} from the Hub for {where}"
            ) from None
        raise FetchError(
            Reason.HTTP_ERROR, f"{label}: HTTP {status} from the Hub for {where}"
        ) from None
    except httpx2.TimeoutException:
        raise RetryableError(Reason.STALLED, f"the Hub did not answer for {where}") from None
    except httpx2.TransportError as exc:
        raise RetryableError(
            Reason.CONNECTION_ERROR, f"{type(exc).__name__} talking to the Hub"
        ) from None

    commit = meta.commit_hash
    if commit and commit != wanted:
        log.info("%s: %s@%s is commit %s", label, repo_id, wanted, commit)
    pinned = (
        hf_hub_url(repo_id, filename, repo_type=repo_type, revision=commit, endpoint=endpoint)
        if commit
        else at_revision
    )
    return HubFile(pinned, commit, meta.size, auth)
