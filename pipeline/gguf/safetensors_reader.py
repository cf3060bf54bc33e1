"""Read safetensors tensors one at a time, from a local path or S3 (ranged reads).

A safetensors file is an 8-byte little-endian header length, a JSON header naming every tensor's
dtype, shape and byte range, then the data. The header alone says where each tensor lives, so a
tensor costs one ranged read and the model is never held whole. (The safetensors library reads
local files only; this is the part it does not do for S3.)
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from pipeline import model_files, storage
from pipeline.errors import PipelineError

HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
INDEX_FILE = model_files.WEIGHTS_INDEX_FILE
SINGLE_FILE = "model.safetensors"
DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}  # BF16 widened by hand below
ITEM_SIZES = {"F32": 4, "F16": 2, "BF16": 2}


class SafetensorsError(PipelineError):
    """A safetensors file is corrupt, truncated, or holds a dtype we do not read."""


@dataclass(frozen=True)
class TensorRef:
    name: str
    uri: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)  # Python ints: no overflow (np.prod wraps around at 2**63)


def _whole_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(uri: str, name: str, entry: object, data_start: int) -> TensorRef:
    """One header entry, every field checked before anything is read (as the safetensors library does)."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise SafetensorsError(f"{uri}: header entry for {name} is not {{dtype, shape, data_offsets}}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str):
        raise SafetensorsError(f"{uri}: tensor {name} has no dtype name")
    if not isinstance(shape, list) or not all(_whole_number(size) for size in shape):
        raise SafetensorsError(f"{uri}: tensor {name} has a shape that is not a list of sizes >= 0: {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_whole_number(offset) for offset in offsets):
        raise SafetensorsError(f"{uri}: tensor {name} has data_offsets that are not two offsets >= 0: {offsets!r}")
    begin, end = offsets
    if begin > end:
        raise SafetensorsError(f"{uri}: tensor {name} has a reversed byte range {offsets}")
    if dtype not in DTYPES:
        raise SafetensorsError(f"{uri}: tensor {name} has dtype {dtype}; only F32, F16 and BF16 are read")
    ref = TensorRef(name, uri, dtype, tuple(shape), data_start + begin, data_start + end)
    if end - begin != ref.n_elements * ITEM_SIZES[dtype]:
        raise SafetensorsError(
            f"{uri}: tensor {name} spans {end - begin} bytes, its shape {shape} needs {ref.n_elements * ITEM_SIZES[dtype]}"
        )
    return ref


def read_header(uri: str) -> dict[str, TensorRef]:
    """The tensors of one safetensors file; any malformed field, range or size is a SafetensorsError
    before a byte of tensor data is read."""
    file_size = storage.size_of(uri)
    head = storage.read_range(uri, 0, HEADER_LENGTH_BYTES) if file_size >= HEADER_LENGTH_BYTES else b""
    if len(head) != HEADER_LENGTH_BYTES:
        raise SafetensorsError(f"{uri} is not a safetensors file (shorter than its header)")
    (length,) = struct.unpack("<Q", head)
    if not 0 < length <= MAX_HEADER_BYTES or HEADER_LENGTH_BYTES + length > file_size:
        raise SafetensorsError(f"{uri} has a corrupt safetensors header (length {length}, file {file_size} bytes)")
    try:
        header = json.loads(storage.read_range(uri, HEADER_LENGTH_BYTES, HEADER_LENGTH_BYTES + length))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SafetensorsError(f"{uri} has a corrupt safetensors header: {exc}") from None
    except storage.StorageError as exc:
        raise SafetensorsError(f"{uri} has a corrupt safetensors header: {exc}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{uri} has a corrupt safetensors header: not a JSON object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise SafetensorsError(f"{uri} has a corrupt safetensors header: __metadata__ is not an object of strings")
    data_start = HEADER_LENGTH_BYTES + length
    tensors = {name: _entry(uri, name, entry, data_start) for name, entry in header.items() if name != "__metadata__"}
    # The data is the tensors back to back, in offset order, and nothing else: no overlap, no gap,
    # nothing past the end of the file (what the safetensors library requires too).
    position = data_start
    for ref in sorted(tensors.values(), key=lambda ref: (ref.start, ref.end)):
        if ref.start != position:
            raise SafetensorsError(
                f"{uri}: tensor {ref.name} starts at byte {ref.start - data_start} of the data, "
                f"expected {position - data_start} (overlapping or missing ranges)"
            )
        position = ref.end
    if position != file_size:
        raise SafetensorsError(f"{uri} is truncated or corrupt: the tensors end at byte {position}, the file at {file_size}")
    return tensors


def model_tensors(model_uri: str) -> dict[str, TensorRef]:
    """Every tensor of a model directory: one model.safetensors, or shards named by the index."""
    index_uri = storage.join(model_uri, INDEX_FILE)
    if storage.exists(index_uri):
        weight_map = storage.read_json(index_uri).get("weight_map", {})
        tensors: dict[str, TensorRef] = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(read_header(storage.join(model_uri, shard)))
        return tensors
    single = storage.join(model_uri, SINGLE_FILE)
    if not storage.exists(single):
        raise SafetensorsError(f"{model_uri} has neither {SINGLE_FILE} nor {INDEX_FILE}")
    return read_header(single)


def load_f32(ref: TensorRef) -> np.ndarray:
    """The tensor as float32 (bf16 widened exactly: its bits are the top half of an f32)."""
    raw = storage.read_range(ref.uri, ref.start, ref.end)
    if ref.dtype == "BF16":
        # Write the bf16 bits into the high halves of zeroed f32 words (little-endian: the second
        # uint16 of each word): one strided copy, 20x faster than widening and shifting.
        widened = np.zeros(ref.n_elements, dtype="<u4")
        widened.view("<u2")[1::2] = np.frombuffer(raw, dtype="<u2")
        return widened.view("<f4").reshape(ref.shape)
    return np.frombuffer(raw, dtype=np.dtype(DTYPES[ref.dtype]).newbyteorder("<")).astype(np.float32).reshape(ref.shape)
