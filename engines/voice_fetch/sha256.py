"""SHA-256 whose running state can be saved with a .part file and picked up by the next
process, so a resume never reads again what was already hashed.

It is OpenSSL's own SHA-256 (libcrypto, the library hashlib uses, SHA-NI included), called
through its SHA256_Init/Update/Final interface, whose context is a plain struct: its bytes
are the state. The `rehash` package does the same for hashlib's objects but refuses
OpenSSL 3 ("not yet supported"), which is what Debian and this image ship. Where libcrypto
or that interface is missing, `new()` falls back to hashlib and `state()` to None: the
next process then re-hashes the .part, as before. ctypes releases the GIL during each call,
as hashlib does for large buffers, so hashing runs beside the socket and disk threads."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import struct
from typing import Protocol

# typedef struct { SHA_LONG h[8]; SHA_LONG Nl, Nh; SHA_LONG data[16]; unsigned num, md_len; }
# SHA256_CTX: 28 32-bit words, the same in OpenSSL 1.1 and 3.x.
CTX_SIZE = 112
_NL_OFFSET = 32


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


def _libcrypto() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("crypto")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        for fn in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
            getattr(lib, fn)
    except (OSError, AttributeError):
        return None
    lib.SHA256_Init.argtypes = [ctypes.c_void_p]
    lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    lib.SHA256_Final.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return lib


_LIB = _libcrypto()


class ResumableSha256:
    def __init__(self, state: bytes | None = None) -> None:
        assert _LIB is not None
        self._ctx = ctypes.create_string_buffer(CTX_SIZE)
        if state is None:
            _LIB.SHA256_Init(self._ctx)
        else:
            if len(state) != CTX_SIZE:
                raise ValueError(f"a SHA-256 state has {CTX_SIZE} bytes, not {len(state)}")
            ctypes.memmove(self._ctx, state, CTX_SIZE)

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        if isinstance(data, bytes):
            _LIB.SHA256_Update(self._ctx, data, len(data))  # type: ignore[union-attr]
            return
        view = memoryview(data)
        if view.readonly:
            self.update(view.tobytes())
            return
        buf = (ctypes.c_char * view.nbytes).from_buffer(view)
        _LIB.SHA256_Update(self._ctx, buf, view.nbytes)  # type: ignore[union-attr]

    def hexdigest(self) -> str:
        # Final on a copy: the running state stays usable, as hashlib's does.
        ctx = ctypes.create_string_buffer(self._ctx.raw, CTX_SIZE)
        out = ctypes.create_string_buffer(32)
        _LIB.SHA256_Final(out, ctx)  # type: ignore[union-attr]
        return out.raw.hex()

    def state(self) -> bytes:
        return self._ctx.raw

    @property
    def bytes_hashed(self) -> int:
        low, high = struct.unpack_from("=II", self._ctx.raw, _NL_OFFSET)
        return ((high << 32) | low) // 8


def new(state: bytes | None = None) -> Hasher:
    """A fresh hasher, or one continuing from `state` (ResumableSha256.state())."""
    if _LIB is None:
        if state is not None:
            raise ValueError("this libcrypto cannot resume a SHA-256 state")
        return hashlib.sha256()
    return ResumableSha256(state)


def state_of(hasher: Hasher) -> bytes | None:
    return hasher.state() if isinstance(hasher, ResumableSha256) else None
