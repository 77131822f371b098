"""Who may talk to the gateway: API keys from a mounted Secret (one file per key, re-read
so a rotated Secret applies with kubelet's refresh), short-lived tokens minted from them
for browsers, and the origins a browser page may call from.

Tokens are JWTs (PyJWT, HS256) signed with a key derived from the API keys themselves:
every replica mounts the same Secret, so a token minted by one is valid on all, and
rotating the keys retires every token made with the old ones. Keys and tokens are never
logged."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from urllib.parse import parse_qs

import jwt
from starlette.types import ASGIApp, Receive, Scope, Send

from voice_engines.common.errors import error_bytes

# Probes and the scrape stay open: kubelet and Prometheus carry no keys.
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
TOKEN_PATH = "/v1/token"
# A browser cannot set headers on a WebSocket: it offers the token as a subprotocol
# ("voiceops", "token.<token>") and the gateway answers with "voiceops".
SUBPROTOCOL = "voiceops"
TOKEN_PROTOCOL_PREFIX = "token."
_REREAD_SECONDS = 1.0
_ALGORITHM = "HS256"


class ApiKeys:
    def __init__(self, folder: str | None, token_ttl: int) -> None:
        self.folder = Path(folder) if folder else None
        self.token_ttl = token_ttl
        self._keys: tuple[str, ...] = ()
        self._read_at = -_REREAD_SECONDS

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def current(self) -> tuple[str, ...]:
        now = time.monotonic()
        if self.folder is not None and now - self._read_at >= _REREAD_SECONDS:
            self._read_at = now
            self._keys = tuple(sorted(_read_keys(self.folder)))
        return self._keys

    def is_key(self, value: str) -> bool:
        return any(hmac.compare_digest(value.encode(), key.encode()) for key in self.current())

    def _signing_key(self) -> bytes:
        material = "\0".join(self.current()).encode()
        return hashlib.sha256(b"voiceops-gateway-token\0" + material).digest()

    def mint(self) -> dict[str, object]:
        now = int(time.time())
        token = jwt.encode(
            {"iat": now, "exp": now + self.token_ttl, "aud": "voice-gateway"},
            self._signing_key(),
            algorithm=_ALGORITHM,
        )
        return {"token": token, "token_type": "Bearer", "expires_in": self.token_ttl}

    def is_token(self, value: str) -> bool:
        if not self.current():
            return False
        try:
            jwt.decode(
                value,
                self._signing_key(),
                algorithms=[_ALGORITHM],
                audience="voice-gateway",
                options={"require": ["exp", "iat"]},
            )
        except jwt.InvalidTokenError:
            return False
        return True


def _read_keys(folder: Path) -> list[str]:
    """Each Secret entry is a file (kubelet's own entries start with '..')."""
    keys: list[str] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return keys
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_file() and (value := entry.read_text("utf-8").strip()):
                keys.append(value)
        except (OSError, UnicodeDecodeError):
            continue
    return keys


def parse_origins(text: str) -> list[str]:
    return [o.strip().rstrip("/") for o in text.split(",") if o.strip()]


class AccessMiddleware:
    """401 for requests and WebSocket handshakes without a valid key or token (when keys
    are configured); 403 for a WebSocket opened by a page of an origin not allowed (CORS
    does not apply to WebSockets, so the Origin header is checked here)."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, origins: list[str]) -> None:
        self.app = app
        self.keys = keys
        self.origins = set(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if kind == "http" and scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)  # a CORS preflight carries no credentials
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, code, message = refusal
        body = error_bytes(code, message)
        response_headers = [(b"content-type", b"application/json")]
        if status == 401:
            response_headers.append((b"www-authenticate", b'Bearer realm="voice-gateway"'))
        if kind == "http":
            start = {"type": "http.response.start", "status": status, "headers": response_headers}
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": response_headers,
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, str] | None:
        if scope["type"] == "websocket" and not self._origin_allowed(headers):
            return (
                403,
                "origin_not_allowed",
                f"pages of {headers.get('origin')} may not open this WebSocket "
                "(spec.gateway.corsOrigins)",
            )
        if not self.keys.enabled:
            return None
        if not self.keys.current():
            return (
                401,
                "unauthorized",
                "the gateway has no API keys yet (the Secret of spec.gateway.auth is missing "
                "or empty): every request is refused",
            )
        credential = _bearer(headers)
        if scope["path"] == TOKEN_PATH:
            # Only a key mints a token: a token cannot renew itself forever.
            if credential and self.keys.is_key(credential):
                return None
            return 401, "unauthorized", "POST /v1/token needs an API key as a bearer token"
        if scope["type"] == "websocket" and not credential:
            credential = _websocket_token(scope)
        if credential and (self.keys.is_key(credential) or self.keys.is_token(credential)):
            return None
        if not credential:
            return (
                401,
                "unauthorized",
                "send an API key (Authorization: Bearer <key>) or a token from POST /v1/token",
            )
        return 401, "unauthorized", "the API key or token is not valid (or has expired)"

    def _origin_allowed(self, headers: dict[str, str]) -> bool:
        origin = headers.get("origin")
        if not origin:
            return True  # not a browser: the key decides
        if origin.rstrip("/") in self.origins:
            return True
        # Same origin: a page the gateway's own host serves.
        host = headers.get("host", "")
        return origin.split("://", 1)[-1] == host


def _bearer(headers: dict[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _websocket_token(scope: Scope) -> str | None:
    for protocol in scope.get("subprotocols", []):
        if protocol.startswith(TOKEN_PROTOCOL_PREFIX):
            return str(protocol[len(TOKEN_PROTOCOL_PREFIX) :])
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    tokens = query.get("token")
    return tokens[0] if tokens else None
