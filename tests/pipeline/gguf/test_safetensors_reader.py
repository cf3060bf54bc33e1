import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.gguf.safetensors_reader import SafetensorsError, load_f32, read_header


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_every_source_dtype_widens_exactly_to_f32(tmp_path, dtype):
    tensors = {"a": torch.randn(64, 48).to(dtype), "b": torch.randn(7).to(dtype)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    refs = read_header(str(tmp_path / "m.safetensors"))
    for name, tensor in tensors.items():
        assert np.array_equal(load_f32(refs[name]), tensor.float().numpy())


def test_unsupported_dtype_and_bad_offsets_are_named(tmp_path):
    save_file({"i": torch.arange(10, dtype=torch.int64)}, str(tmp_path / "int.safetensors"))
    with pytest.raises(SafetensorsError, match="dtype I64"):
        read_header(str(tmp_path / "int.safetensors"))
    header = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,32]}}'
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 32)
    with pytest.raises(SafetensorsError, match="tensor w spans 32 bytes, its shape \\[4\\] needs 16"):
        read_header(str(tmp_path / "bad.safetensors"))


def safetensors_file(path, header: object, data_bytes: int, *, declared_length: int | None = None) -> str:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if declared_length is None else declared_length) + text + b"\1" * data_bytes)
    return str(path)


HOSTILE_HEADERS = {
    # shape product 2**80 elements: overflows int64 (np.prod wrapped around before)
    "overflowing shape": ({"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}, 16),
    "negative shape": ({"w": {"dtype": "F32", "shape": [-1, -4], "data_offsets": [0, 16]}}, 16),
    "negative offset": ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}}, 16),
    "reversed range": ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}, 16),
    "overlapping ranges": (
        {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}},
        24,
    ),
    "a gap between tensors": (
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}},
        24,
    ),
    "range past the file": ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 8),
    "offsets not numbers": ({"w": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}}, 16),
    "three offsets": ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8, 16]}}, 16),
    "shape not a list": ({"w": {"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}}, 16),
    "boolean size": ({"w": {"dtype": "F32", "shape": [True, 4], "data_offsets": [0, 16]}}, 16),
    "header not an object": ([1, 2, 3], 0),
    "entry not an object": ({"w": 7}, 0),
    "metadata not strings": ({"__metadata__": {"format": 1}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 4),
}


@pytest.mark.parametrize("case", list(HOSTILE_HEADERS))
def test_a_header_the_safetensors_library_refuses_is_a_named_error_before_any_data_is_read(tmp_path, case, monkeypatch):
    """The oracle is the safetensors library itself: every hostile header here is one it refuses;
    ours refuses it too, with SafetensorsError, and never reads tensor data for it."""
    import safetensors

    from pipeline import storage

    header, data_bytes = HOSTILE_HEADERS[case]
    path = safetensors_file(tmp_path / "hostile.safetensors", header, data_bytes)
    with pytest.raises(Exception):  # noqa: B017 - the library raises its own error types
        with safetensors.safe_open(path, framework="numpy") as opened:
            for name in opened.keys():
                opened.get_tensor(name)
    reads = []
    original = storage.read_range
    monkeypatch.setattr(storage, "read_range", lambda uri, start, end: reads.append((start, end)) or original(uri, start, end))
    with pytest.raises(SafetensorsError):
        read_header(path)
    text_end = 8 + len(json.dumps(header).encode())
    assert all(end <= text_end for _, end in reads), "only the header was read"


def test_a_header_longer_than_the_file_is_named(tmp_path):
    path = safetensors_file(
        tmp_path / "short.safetensors", {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 4, declared_length=10_000
    )
    with pytest.raises(SafetensorsError, match="corrupt safetensors header"):
        read_header(path)
