"""Reads a CTranslate2 model.bin: a header (binary version, spec name, revision, variable
count), then each variable (name, rank, dims, dtype id, byte count, bytes), then aliases
(name -> variable name). Strings are a uint16 length (counting a trailing NUL), the bytes,
and the NUL. Everything is little-endian."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

# CTranslate2's DataType enum, in its order.
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16: the top half of a float32, widened on read
}
_BFLOAT16 = 5
# Version 5 added aliases; 6 is what current CTranslate2 writes. Older files predate the
# converters faster-whisper models are made with.
SUPPORTED_VERSIONS = (5, 6)


class Ct2FormatError(ValueError):
    pass


@dataclass(frozen=True)
class Ct2Header:
    version: int
    spec: str
    revision: int
    variable_count: int


@dataclass
class Ct2Model:
    header: Ct2Header
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return self.aliases.get(name, name) in self.variables

    def __getitem__(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]

    def scalar(self, name: str) -> int:
        return int(self[name].reshape(-1)[0])

    def weight(self, name: str) -> np.ndarray:
        """A float weight, dequantized when the model was converted with int8/int16
        quantization (CTranslate2 stores q = round(w * scale), one scale per row or one
        for the whole matrix, beside the weight as <name>_scale)."""
        value = self[name]
        scale_name = f"{name}_scale"
        if value.dtype.kind == "i" and scale_name in self:
            scale = self[scale_name].astype(np.float32)
            if scale.ndim == 1 and value.ndim >= 2:
                scale = scale.reshape(-1, *([1] * (value.ndim - 1)))
            return value.astype(np.float32) / scale
        if value.dtype.kind != "f":
            raise Ct2FormatError(f"{name} has dtype {value.dtype}, not a float weight")
        return value


class _Reader:
    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def take(self, size: int) -> bytes:
        data = self.stream.read(size)
        if len(data) != size:
            raise Ct2FormatError("model.bin ends early: the file is truncated")
        return data

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (length,) = self.unpack("H")
        raw = self.take(length)
        if not raw.endswith(b"\0"):
            raise Ct2FormatError("malformed string in model.bin")
        return raw[:-1].decode("utf-8")


def read_header(stream: BinaryIO) -> Ct2Header:
    reader = _Reader(stream)
    (version,) = reader.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise Ct2FormatError(
            f"CTranslate2 binary version {version} is not supported "
            f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    spec = reader.string()
    (revision,) = reader.unpack("I")
    (count,) = reader.unpack("I")
    return Ct2Header(version, spec, revision, count)


def _read_variable(reader: _Reader) -> tuple[str, np.ndarray]:
    name = reader.string()
    (rank,) = reader.unpack("B")
    shape = reader.unpack("I" * rank) if rank else ()
    (dtype_id,) = reader.unpack("B")
    (num_bytes,) = reader.unpack("I")
    if dtype_id not in _DTYPES:
        raise Ct2FormatError(f"{name}: unknown dtype id {dtype_id}")
    dtype = _DTYPES[dtype_id]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected != num_bytes:
        raise Ct2FormatError(f"{name}: {num_bytes} bytes for shape {shape} of {dtype}")
    array = np.frombuffer(reader.take(num_bytes), dtype=dtype).reshape(shape)
    if dtype_id == _BFLOAT16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return name, array


def read_model(path: Path) -> Ct2Model:
    with open(path, "rb") as stream:
        header = read_header(stream)
        reader = _Reader(stream)
        variables = dict(_read_variable(reader) for _ in range(header.variable_count))
        (alias_count,) = reader.unpack("I")
        aliases = {reader.string(): reader.string() for _ in range(alias_count)}
    return Ct2Model(header, variables, aliases)
