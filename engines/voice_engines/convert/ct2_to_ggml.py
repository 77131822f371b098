"""Converts a faster-whisper (CTranslate2) Whisper model folder into whisper.cpp's ggml
model file, so one set of weights serves both STT backends.

    ct2-to-ggml MODEL_DIR OUTPUT.bin [--f32]

MODEL_DIR holds model.bin and tokenizer.json (or vocabulary.json / vocabulary.txt). The
ggml file is what whisper.cpp's own converter writes: the magic, eleven int32
hyper-parameters, the mel filter bank, the byte-level vocabulary, then the tensors under
the names of OpenAI's Whisper checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO

import numpy as np

from voice_engines.convert.ct2_model import Ct2FormatError, Ct2Model, read_model

GGML_MAGIC = 0x67676D6C  # "ggml"
SAMPLE_RATE = 16_000
N_FFT = 400
ENDOFTEXT = "<|endoftext|>"


@dataclass(frozen=True)
class WhisperHParams:
    """In the order whisper.cpp reads them."""

    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    n_mels: int
    ftype: int


def _layer_count(model: Ct2Model, stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in model.variables if (m := pattern.match(name))}
    if indices != set(range(len(indices))) or not indices:
        raise Ct2FormatError(f"{stack} layers are missing or not numbered 0..n-1")
    return len(indices)


def hparams_of(model: Ct2Model, use_f16: bool) -> WhisperHParams:
    if model.header.spec != "WhisperSpec":
        raise Ct2FormatError(f"not a Whisper model: spec is {model.header.spec!r}")
    conv1 = model["encoder/conv1/weight"]  # (n_audio_state, n_mels, 3)
    embeddings = model["decoder/embeddings/weight"]
    return WhisperHParams(
        n_vocab=embeddings.shape[0],
        n_audio_ctx=model["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=conv1.shape[0],
        n_audio_head=model.scalar("encoder/num_heads"),
        n_audio_layer=_layer_count(model, "encoder"),
        n_text_ctx=model["decoder/position_encodings/encodings"].shape[0],
        n_text_state=embeddings.shape[1],
        n_text_head=model.scalar("decoder/num_heads"),
        n_text_layer=_layer_count(model, "decoder"),
        n_mels=conv1.shape[1],
        ftype=1 if use_f16 else 0,
    )


def mel_filters(n_mels: int) -> np.ndarray:
    """The filter bank Whisper computes its log-mel input with: librosa's Slaney-style
    mel filters at 16 kHz for a 400-point FFT, (n_mels, 201)."""
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels).astype(np.float32)


@cache
def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-level BPE spells every byte as a printable character; this undoes it.
    (tokenizers' ByteLevel decoder joins tokens into text and replaces partial UTF-8
    sequences, but whisper.cpp needs each token's exact bytes.)"""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return {char: byte for byte, char in mapping.items()}


def token_bytes(token: str) -> bytes:
    table = _unicode_to_byte()
    try:
        return bytes(table[c] for c in token)
    except KeyError as exc:
        raise Ct2FormatError(f"token {token!r} is not byte-level BPE") from exc


def read_vocabulary(model_dir: Path) -> list[bytes]:
    """The text tokens, ids 0.. up to (not including) <|endoftext|>: whisper.cpp numbers the
    special tokens itself from n_vocab."""
    tokenizer = model_dir / "tokenizer.json"
    if tokenizer.exists():
        vocab: dict[str, int] = json.loads(tokenizer.read_text("utf-8"))["model"]["vocab"]
        ordered = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]
        ids = sorted(vocab.values())
        if ids != list(range(len(ids))):
            raise Ct2FormatError("tokenizer.json vocabulary ids are not 0..n-1")
    elif (model_dir / "vocabulary.json").exists():
        ordered = json.loads((model_dir / "vocabulary.json").read_text("utf-8"))
    elif (model_dir / "vocabulary.txt").exists():
        ordered = (model_dir / "vocabulary.txt").read_text("utf-8").split("\n")
    else:
        raise Ct2FormatError(f"no tokenizer.json or vocabulary file in {model_dir}")
    if ENDOFTEXT in ordered:
        ordered = ordered[: ordered.index(ENDOFTEXT)]
    return [token_bytes(t) for t in ordered]


def _split_rows(array: np.ndarray, parts: int) -> list[np.ndarray]:
    if array.shape[0] % parts:
        raise Ct2FormatError(f"cannot split {array.shape} into {parts} equal parts")
    return np.split(array, parts, axis=0)


def _linear(model: Ct2Model, src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{dst}.weight", model.weight(f"{src}/weight")
    yield f"{dst}.bias", model[f"{src}/bias"]


def _layer_norm(model: Ct2Model, src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{dst}.weight", model[f"{src}/gamma"]
    yield f"{dst}.bias", model[f"{src}/beta"]


def _fused(
    model: Ct2Model, src: str, dst: str, names: tuple[str, ...]
) -> Iterator[tuple[str, np.ndarray]]:
    """CTranslate2 fuses attention projections into one linear stacked along the output
    axis (q|k|v, or k|v for cross-attention). Whisper's key projection has no bias, so
    its slice of the fused bias is zeros and is dropped."""
    weights = _split_rows(model.weight(f"{src}/weight"), len(names))
    biases = _split_rows(model[f"{src}/bias"], len(names))
    for name, weight, bias in zip(names, weights, biases, strict=True):
        yield f"{dst}.{name}.weight", weight
        if name != "key":
            yield f"{dst}.{name}.bias", bias


def _block(model: Ct2Model, src: str, dst: str, cross: bool) -> Iterator[tuple[str, np.ndarray]]:
    yield from _layer_norm(model, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
    yield from _fused(
        model, f"{src}/self_attention/linear_0", f"{dst}.attn", ("query", "key", "value")
    )
    yield from _linear(model, f"{src}/self_attention/linear_1", f"{dst}.attn.out")
    if cross:
        yield from _layer_norm(model, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
        yield from _linear(model, f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
        yield from _fused(model, f"{src}/attention/linear_1", f"{dst}.cross_attn", ("key", "value"))
        yield from _linear(model, f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
    yield from _layer_norm(model, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
    yield from _linear(model, f"{src}/ffn/linear_0", f"{dst}.mlp.0")
    yield from _linear(model, f"{src}/ffn/linear_1", f"{dst}.mlp.2")


def whisper_tensors(model: Ct2Model, hp: WhisperHParams) -> Iterator[tuple[str, np.ndarray]]:
    """Every tensor whisper.cpp loads, under the names of OpenAI's checkpoints."""
    for conv in ("conv1", "conv2"):
        yield from _linear(model, f"encoder/{conv}", f"encoder.{conv}")
    yield "encoder.positional_embedding", model["encoder/position_encodings/encodings"]
    for i in range(hp.n_audio_layer):
        yield from _block(model, f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    yield from _layer_norm(model, "encoder/layer_norm", "encoder.ln_post")
    yield "decoder.positional_embedding", model["decoder/position_encodings/encodings"]
    yield "decoder.token_embedding.weight", model.weight("decoder/embeddings/weight")
    for i in range(hp.n_text_layer):
        yield from _block(model, f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    yield from _layer_norm(model, "decoder/layer_norm", "decoder.ln")


# whisper.cpp allocates these in float32 whatever the file's ftype.
_ALWAYS_F32 = {
    "encoder.conv1.bias",
    "encoder.conv2.bias",
    "encoder.positional_embedding",
    "decoder.positional_embedding",
}


def _write_tensor(out: BinaryIO, name: str, data: np.ndarray, use_f16: bool) -> None:
    if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
        data = data.reshape(data.shape[0], 1)  # whisper.cpp adds it across time as [n, 1]
    if use_f16 and data.ndim >= 2 and name not in _ALWAYS_F32:
        data, ftype = data.astype("<f2"), 1
    else:
        data, ftype = data.astype("<f4"), 0
    encoded = name.encode()
    out.write(struct.pack("<iii", data.ndim, len(encoded), ftype))
    out.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))  # ggml: innermost first
    out.write(encoded)
    out.write(np.ascontiguousarray(data).tobytes())


def write_ggml(
    out: BinaryIO,
    hp: WhisperHParams,
    filters: np.ndarray,
    vocabulary: list[bytes],
    tensors: Iterator[tuple[str, np.ndarray]],
) -> int:
    out.write(struct.pack("<i", GGML_MAGIC))
    out.write(struct.pack("<11i", *astuple(hp)))
    out.write(struct.pack("<ii", *filters.shape))
    out.write(filters.astype("<f4").tobytes())
    out.write(struct.pack("<i", len(vocabulary)))
    for token in vocabulary:
        out.write(struct.pack("<i", len(token)))
        out.write(token)
    count = 0
    for name, data in tensors:
        _write_tensor(out, name, data, use_f16=hp.ftype == 1)
        count += 1
    return count


def convert(model_dir: Path, output: Path, use_f16: bool = True) -> WhisperHParams:
    """Writes the ggml file atomically: a half-written model never sits at OUTPUT."""
    model_dir = Path(model_dir)
    model = read_model(model_dir / "model.bin")
    hp = hparams_of(model, use_f16)
    vocabulary = read_vocabulary(model_dir)
    if len(vocabulary) >= hp.n_vocab:
        raise Ct2FormatError(
            f"{len(vocabulary)} text tokens do not fit a {hp.n_vocab}-token embedding"
        )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            write_ggml(out, hp, mel_filters(hp.n_mels), vocabulary, whisper_tensors(model, hp))
            # mkstemp makes the file 0600; a model is read by other users (the engine
            # image's uid 10001, whoever converted it).
            os.fchmod(out.fileno(), 0o644)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ct2-to-ggml",
        description="Convert a faster-whisper (CTranslate2) Whisper model to whisper.cpp ggml.",
    )
    parser.add_argument("model_dir", type=Path, help="folder with model.bin and tokenizer.json")
    parser.add_argument("output", type=Path, help="ggml file to write, e.g. ggml-tiny.en.bin")
    parser.add_argument(
        "--f32", action="store_true", help="store matrices as float32 (default: float16)"
    )
    args = parser.parse_args(argv)
    try:
        hp = convert(args.model_dir, args.output, use_f16=not args.f32)
    except (Ct2FormatError, OSError, KeyError) as exc:
        print(f"ct2-to-ggml: {exc}", file=sys.stderr)
        return 1
    size_mb = args.output.stat().st_size / 1e6
    print(
        f"wrote {args.output} ({size_mb:.1f} MB): {hp.n_audio_layer}+{hp.n_text_layer} layers, "
        f"width {hp.n_audio_state}, {hp.n_mels} mels, vocab {hp.n_vocab}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
