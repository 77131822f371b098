"""The CTranslate2 -> whisper.cpp converter: format details on a small synthetic model
(fast, unit), and the real tiny.en conversion loaded by whisper.cpp (engines)."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from voice_engines.convert.ct2_model import Ct2FormatError, read_header, read_model
from voice_engines.convert.ct2_to_ggml import GGML_MAGIC, convert, main, token_bytes

STATE, HEADS, MELS, VOCAB, AUDIO_CTX, TEXT_CTX = 8, 2, 80, 300, 6, 5


def _string(value: str) -> bytes:
    raw = value.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def ct2_bytes(variables: dict[str, np.ndarray], aliases: dict[str, str], version: int = 6) -> bytes:
    dtype_ids = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4}
    out = [
        struct.pack("<I", version),
        _string("WhisperSpec"),
        struct.pack("<II", 3, len(variables)),
    ]
    for name, value in variables.items():
        out += [_string(name), struct.pack("<B", value.ndim)]
        out += [struct.pack("<I", d) for d in value.shape]
        out += [struct.pack("<BI", dtype_ids[value.dtype.name], value.nbytes), value.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_string(alias), _string(target)]
    return b"".join(out)


def tiny_whisper(rng: np.random.Generator, quantize: bool = False) -> dict[str, np.ndarray]:
    f16 = lambda *shape: rng.standard_normal(shape).astype(np.float16)  # noqa: E731
    v: dict[str, np.ndarray] = {
        "encoder/num_heads": np.array(HEADS, np.int16),
        "decoder/num_heads": np.array(HEADS, np.int16),
        "encoder/conv1/weight": f16(STATE, MELS, 3),
        "encoder/conv1/bias": f16(STATE),
        "encoder/conv2/weight": f16(STATE, STATE, 3),
        "encoder/conv2/bias": f16(STATE),
        "encoder/position_encodings/encodings": f16(AUDIO_CTX, STATE),
        "decoder/position_encodings/encodings": f16(TEXT_CTX, STATE),
        "decoder/embeddings/weight": f16(VOCAB, STATE),
    }
    for stack in ("encoder", "decoder"):
        for norm in ("layer_norm",):
            v[f"{stack}/{norm}/gamma"], v[f"{stack}/{norm}/beta"] = f16(STATE), f16(STATE)
        layer = f"{stack}/layer_0"
        attns = [("self_attention", 2)] + ([("attention", 3)] if stack == "decoder" else [])
        for attn, linears in attns:
            v[f"{layer}/{attn}/layer_norm/gamma"] = f16(STATE)
            v[f"{layer}/{attn}/layer_norm/beta"] = f16(STATE)
            rows = [3 * STATE, STATE] if attn == "self_attention" else [STATE, 2 * STATE, STATE]
            for i, n in enumerate(rows[:linears]):
                v[f"{layer}/{attn}/linear_{i}/weight"] = f16(n, STATE)
                v[f"{layer}/{attn}/linear_{i}/bias"] = f16(n)
        v[f"{layer}/ffn/layer_norm/gamma"], v[f"{layer}/ffn/layer_norm/beta"] = (
            f16(STATE),
            f16(STATE),
        )
        v[f"{layer}/ffn/linear_0/weight"], v[f"{layer}/ffn/linear_0/bias"] = (
            f16(4 * STATE, STATE),
            f16(4 * STATE),
        )
        v[f"{layer}/ffn/linear_1/weight"], v[f"{layer}/ffn/linear_1/bias"] = (
            f16(STATE, 4 * STATE),
            f16(STATE),
        )
    if quantize:
        name = "encoder/layer_0/ffn/linear_0/weight"
        weight = v[name].astype(np.float32)
        scale = 127 / np.abs(weight).max(axis=1)
        v[name] = np.round(weight * scale[:, None]).astype(np.int8)
        v[f"{name}_scale"] = scale.astype(np.float32)
    return v


def tokenizer_json(count: int) -> str:
    vocab = {f"t{i}": i for i in range(count - 3)}
    vocab.update({"Ġhello": count - 3, "Ċ": count - 2, "<|endoftext|>": count - 1})
    return json.dumps({"model": {"type": "BPE", "vocab": vocab}, "added_tokens": []})


def read_ggml(path: Path) -> tuple[list[int], np.ndarray, list[bytes], dict[str, tuple]]:
    data = io.BytesIO(path.read_bytes())
    take = lambda fmt: struct.unpack("<" + fmt, data.read(struct.calcsize("<" + fmt)))  # noqa: E731
    (magic,) = take("i")
    assert magic == GGML_MAGIC
    hparams = list(take("11i"))
    rows, cols = take("ii")
    filters = np.frombuffer(data.read(rows * cols * 4), "<f4").reshape(rows, cols)
    (n_tokens,) = take("i")
    tokens = [data.read(take("i")[0]) for _ in range(n_tokens)]
    tensors: dict[str, tuple] = {}
    while header := data.read(12):
        n_dims, name_len, ftype = struct.unpack("<iii", header)
        dims = take(f"{n_dims}i")
        name = data.read(name_len).decode()
        count = int(np.prod(dims))
        dtype = "<f2" if ftype == 1 else "<f4"
        values = np.frombuffer(data.read(count * np.dtype(dtype).itemsize), dtype)
        tensors[name] = (tuple(reversed(dims)), ftype, values.reshape(tuple(reversed(dims))))
    return hparams, filters, tokens, tensors


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    variables = tiny_whisper(np.random.default_rng(1))
    (tmp_path / "model.bin").write_bytes(
        ct2_bytes(variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    )
    (tmp_path / "tokenizer.json").write_text(tokenizer_json(VOCAB - 40))
    return tmp_path, variables


@pytest.mark.unit
def test_header_is_parsed(tiny_model_dir: tuple[Path, dict]) -> None:
    model_dir, variables = tiny_model_dir
    with open(model_dir / "model.bin", "rb") as stream:
        header = read_header(stream)
    assert (header.version, header.spec, header.revision) == (6, "WhisperSpec", 3)
    assert header.variable_count == len(variables)
    model = read_model(model_dir / "model.bin")
    assert model["decoder/projection/weight"] is model["decoder/embeddings/weight"]


@pytest.mark.unit
def test_unsupported_version_and_truncation_are_reported() -> None:
    with pytest.raises(Ct2FormatError, match="version 2"):
        read_header(io.BytesIO(struct.pack("<I", 2)))
    with pytest.raises(Ct2FormatError, match="truncated"):
        read_header(io.BytesIO(struct.pack("<I", 6) + struct.pack("<H", 30) + b"Whis"))


@pytest.mark.unit
def test_byte_level_tokens_decode_to_their_bytes() -> None:
    assert token_bytes("Ġhello") == b" hello"
    assert token_bytes("Ċ") == b"\n"
    assert token_bytes("Ã©") == "é".encode()
    assert token_bytes("âĢĻ") == "\u2019".encode()


@pytest.mark.unit
def test_conversion_layout(tiny_model_dir: tuple[Path, dict], tmp_path: Path) -> None:
    model_dir, v = tiny_model_dir
    out = tmp_path / "out" / "ggml.bin"
    assert main([str(model_dir), str(out)]) == 0
    # Readable by the engine's user whoever converted it (not mkstemp's 0600).
    assert out.stat().st_mode & 0o777 == 0o644
    hparams, filters, tokens, tensors = read_ggml(out)
    assert hparams == [VOCAB, AUDIO_CTX, STATE, HEADS, 1, TEXT_CTX, STATE, HEADS, 1, MELS, 1]
    assert filters.shape == (MELS, 201)
    assert filters.max() > 0
    # Text tokens only, up to <|endoftext|>, byte-decoded.
    assert len(tokens) == VOCAB - 41
    assert tokens[-2:] == [b" hello", b"\n"]
    assert "encoder.blocks.0.attn.key.bias" not in tensors
    assert "decoder.blocks.0.cross_attn.key.bias" not in tensors
    q, k, val = np.split(v["encoder/layer_0/self_attention/linear_0/weight"], 3)
    assert np.array_equal(tensors["encoder.blocks.0.attn.query.weight"][2], q)
    assert np.array_equal(tensors["encoder.blocks.0.attn.key.weight"][2], k)
    assert np.array_equal(tensors["encoder.blocks.0.attn.value.weight"][2], val)
    ck, cv = np.split(v["decoder/layer_0/attention/linear_1/weight"], 2)
    assert np.array_equal(tensors["decoder.blocks.0.cross_attn.key.weight"][2], ck)
    assert np.array_equal(tensors["decoder.blocks.0.cross_attn.value.weight"][2], cv)
    assert np.array_equal(
        tensors["decoder.blocks.0.cross_attn.out.weight"][2],
        v["decoder/layer_0/attention/linear_2/weight"],
    )
    assert np.array_equal(
        tensors["encoder.blocks.0.mlp.2.bias"][2],
        v["encoder/layer_0/ffn/linear_1/bias"].astype(np.float32),
    )
    assert np.array_equal(
        tensors["decoder.ln.weight"][2], v["decoder/layer_norm/gamma"].astype(np.float32)
    )
    # whisper.cpp's allocation: conv biases [n, 1] and positional embeddings in f32,
    # 1-D tensors f32, matrices f16.
    assert tensors["encoder.conv1.bias"][:2] == ((STATE, 1), 0)
    assert tensors["encoder.positional_embedding"][1] == 0
    assert tensors["encoder.conv1.weight"][:2] == ((STATE, MELS, 3), 1)
    assert tensors["decoder.token_embedding.weight"][:2] == ((VOCAB, STATE), 1)
    assert tensors["encoder.blocks.0.attn_ln.bias"][1] == 0
    assert len(tensors) == 2 * 2 + 1 + 15 + 2 + 2 + 24 + 2


@pytest.mark.unit
def test_int8_weights_are_dequantized(tmp_path: Path) -> None:
    variables = tiny_whisper(np.random.default_rng(2), quantize=True)
    (tmp_path / "model.bin").write_bytes(ct2_bytes(variables, {}))
    (tmp_path / "tokenizer.json").write_text(tokenizer_json(VOCAB - 40))
    convert(tmp_path, tmp_path / "q.bin", use_f16=False)
    *_, tensors = read_ggml(tmp_path / "q.bin")
    name = "encoder/layer_0/ffn/linear_0/weight"
    expected = variables[name].astype(np.float32) / variables[f"{name}_scale"][:, None]
    assert np.allclose(tensors["encoder.blocks.0.mlp.0.weight"][2], expected)


@pytest.mark.unit
def test_a_non_whisper_model_is_refused(tmp_path: Path) -> None:
    blob = ct2_bytes({"x": np.zeros(2, np.float32)}, {}).replace(b"WhisperSpec", b"BertSpec\0\0\0")
    (tmp_path / "model.bin").write_bytes(blob)
    assert main([str(tmp_path), str(tmp_path / "o.bin")]) == 1
    assert not (tmp_path / "o.bin").exists()


@pytest.mark.engines
def test_real_conversion_loads_in_whisper_cpp(ggml_model: Path) -> None:
    from pywhispercpp.model import Model

    hparams, _filters, tokens, _tensors = read_ggml(ggml_model)
    assert hparams == [51864, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1]
    assert len(tokens) == 50256
    assert tokens[220] == b" "
    model = Model(str(ggml_model), redirect_whispercpp_logs_to=None, n_threads=2)
    silence = np.zeros(16000, np.float32)
    assert isinstance(model.transcribe(silence), list)
