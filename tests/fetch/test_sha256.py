"""The resumable SHA-256: OpenSSL's, its state carried across objects as bytes."""

from __future__ import annotations

import hashlib
import os

import pytest

from voice_fetch import sha256

pytestmark = pytest.mark.unit


def test_a_state_saved_half_way_continues_to_hashlibs_digest() -> None:
    data = os.urandom(3 << 20) + b"tail"
    first = sha256.new()
    first.update(data[:1_234_567])
    state = sha256.state_of(first)
    assert state is not None  # libcrypto here has SHA256_Init/Update/Final
    second = sha256.new(state)
    second.update(memoryview(bytearray(data[1_234_567:])))  # as disk reads hand it over
    assert second.hexdigest() == hashlib.sha256(data).hexdigest()
    assert isinstance(second, sha256.ResumableSha256)
    assert second.bytes_hashed == len(data)
    # hexdigest leaves the running state usable, as hashlib's does.
    second.update(b"more")
    assert second.hexdigest() == hashlib.sha256(data + b"more").hexdigest()


def test_a_state_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="112 bytes"):
        sha256.new(b"\0" * 16)
