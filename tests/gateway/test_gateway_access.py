"""Who may talk to the gateway: API keys from a mounted Secret (a folder as kubelet lays it
out), 401 on HTTP and on the WebSocket handshake without a valid one, short-lived tokens
for browsers (subprotocol or query), keys rotated in place, and the origins a page may
call from (CORS for HTTP, the Origin header for the WebSocket)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gatewaykit import Gateway
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.unit

KEY = "vk-test-0123456789abcdef"
OTHER_KEY = "vk-second-fedcba9876543210"
ALLOWED = "https://app.example"


def secret_folder(root: Path, keys: dict[str, str]) -> Path:
    """A Secret volume: each key a symlink into ..data, as kubelet writes it."""
    data = root / "..2026_12_02_00_00_00.1"
    data.mkdir(parents=True)
    for name, value in keys.items():
        (data / name).write_text(value + "\n")
    (root / "..data").symlink_to(data.name)
    for name in keys:
        (root / name).symlink_to(f"..data/{name}")
    return root


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return secret_folder(tmp_path_factory.mktemp("auth") / "keys", {"first": KEY})


@pytest.fixture(scope="module")
def gateway(keys_dir: Path) -> Iterator[Gateway]:
    gateway = Gateway(
        env={
            "GATEWAY_AUTH_KEYS_DIR": str(keys_dir),
            "GATEWAY_TOKEN_TTL": "60",
            "GATEWAY_CORS_ORIGINS": f"{ALLOWED},http://localhost:3000",
        },
        routes={"stages": {}},
    ).wait_alive()
    try:
        yield gateway
    finally:
        gateway.stop()


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def ws_url(gateway: Gateway, query: str = "") -> str:
    return gateway.ws_url + query


def handshake_status(url: str, **options: object) -> int:
    try:
        with connect(url, open_timeout=10, **options) as ws:  # type: ignore[arg-type]
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


def test_http_needs_a_valid_key(gateway: Gateway) -> None:
    url = f"{gateway.url}/v1/routes"
    missing = httpx.get(url, timeout=5)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["error"]["code"] == "unauthorized"
    assert httpx.get(url, headers=bearer("vk-wrong"), timeout=5).status_code == 401
    assert httpx.get(url, headers=bearer(KEY), timeout=5).status_code == 200
    turn = httpx.post(f"{gateway.url}/v1/turn", content=b"RIFF", timeout=5)
    assert turn.status_code == 401


def test_probes_and_metrics_stay_open(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/health", timeout=5).status_code == 200
    assert httpx.get(f"{gateway.url}/metrics", timeout=5).status_code == 200
    assert httpx.get(f"{gateway.url}/ready", timeout=5).status_code in (200, 503)


def test_the_websocket_handshake_needs_a_valid_key(gateway: Gateway) -> None:
    assert handshake_status(ws_url(gateway)) == 401
    assert handshake_status(ws_url(gateway), additional_headers=bearer("vk-wrong")) == 401
    assert handshake_status(ws_url(gateway), additional_headers=bearer(KEY)) == 101


def test_a_browser_token_opens_the_websocket_and_expires_with_its_keys(gateway: Gateway) -> None:
    assert httpx.post(f"{gateway.url}/v1/token", timeout=5).status_code == 401
    minted = httpx.post(f"{gateway.url}/v1/token", headers=bearer(KEY), timeout=5)
    assert minted.status_code == 200, minted.text
    body = minted.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 60
    token = body["token"]
    # As a subprotocol (what a browser can set), answered with ours.
    with connect(ws_url(gateway), subprotocols=["voiceops", f"token.{token}"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "voiceops"
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
    assert handshake_status(ws_url(gateway, f"?token={token}")) == 101
    # A token serves requests but cannot mint the next one.
    assert (
        httpx.get(f"{gateway.url}/v1/routes", headers=bearer(token), timeout=5).status_code == 200
    )
    assert (
        httpx.post(f"{gateway.url}/v1/token", headers=bearer(token), timeout=5).status_code == 401
    )
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert handshake_status(ws_url(gateway, f"?token={forged}")) == 401


def test_keys_rotate_in_place(gateway: Gateway, keys_dir: Path) -> None:
    token = httpx.post(f"{gateway.url}/v1/token", headers=bearer(KEY), timeout=5).json()["token"]
    (keys_dir / "..data" / "second").write_text(OTHER_KEY)
    (keys_dir / "second").symlink_to("..data/second")
    url = f"{gateway.url}/v1/routes"
    deadline = time.monotonic() + 5
    while httpx.get(url, headers=bearer(OTHER_KEY), timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the added key was not taken"
        time.sleep(0.2)
    # New keys sign new tokens: the old token is retired with the old key set.
    assert httpx.get(url, headers=bearer(token), timeout=5).status_code == 401
    assert httpx.get(url, headers=bearer(KEY), timeout=5).status_code == 200


def test_cors_allows_only_listed_origins(gateway: Gateway) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = httpx.options(
        f"{gateway.url}/v1/token", headers={"Origin": ALLOWED, **preflight}, timeout=5
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    other = httpx.options(
        f"{gateway.url}/v1/token",
        headers={"Origin": "https://evil.example", **preflight},
        timeout=5,
    )
    assert "access-control-allow-origin" not in other.headers
    # A refusal is readable by the allowed page.
    refused = httpx.get(f"{gateway.url}/v1/routes", headers={"Origin": ALLOWED}, timeout=5)
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ALLOWED


def test_the_websocket_refuses_pages_of_other_origins(gateway: Gateway) -> None:
    key = bearer(KEY)
    assert handshake_status(ws_url(gateway), additional_headers=key, origin=ALLOWED) == 101
    evil = handshake_status(ws_url(gateway), additional_headers=key, origin="https://evil.example")
    assert evil == 403


def test_keys_and_tokens_never_reach_the_log(gateway: Gateway) -> None:
    token = httpx.post(f"{gateway.url}/v1/token", headers=bearer(KEY), timeout=5).json()["token"]
    httpx.get(f"{gateway.url}/v1/routes", headers=bearer(token), timeout=5)
    handshake_status(ws_url(gateway), additional_headers=bearer(KEY))
    log = gateway.log()
    assert KEY not in log and OTHER_KEY not in log


def test_without_any_key_every_request_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "keys"
    empty.mkdir()
    gateway = Gateway(env={"GATEWAY_AUTH_KEYS_DIR": str(empty)}, routes={"stages": {}})
    try:
        gateway.wait_alive()
        refused = httpx.get(f"{gateway.url}/v1/routes", headers=bearer(KEY), timeout=5)
        assert refused.status_code == 401
        assert "no API keys" in refused.json()["error"]["message"]
        assert handshake_status(gateway.ws_url, additional_headers=bearer(KEY)) == 401
    finally:
        gateway.stop()


def test_without_auth_the_token_endpoint_says_why() -> None:
    gateway = Gateway(routes={"stages": {}})
    try:
        gateway.wait_alive()
        answer = httpx.post(f"{gateway.url}/v1/token", timeout=5)
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "auth_disabled"
    finally:
        gateway.stop()
