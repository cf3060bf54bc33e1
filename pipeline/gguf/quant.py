"""Output types, llama.cpp's per-tensor type rules, and llama.cpp's own quantization kernels.

The kernels are ggml's (``ggml_quantize_chunk`` in the libggml that llama-cpp-python ships), called
through ctypes: K-quants are not re-implemented here. ctypes releases the GIL during the call, so
several tensors quantize in parallel threads.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from pipeline.contracts import Quantization
from pipeline.errors import PipelineError

QK_K = 256  # super-block size of the K-quants


# The contracts' enum (infra/ checks the stack's setting against it), under the name llama.cpp's
# converter gives it (--outtype).
OutputType = Quantization

FILE_TYPES = {  # general.file_type as llama.cpp writes it for each output type
    OutputType.F32: LlamaFileType.ALL_F32,
    OutputType.F16: LlamaFileType.MOSTLY_F16,
    OutputType.Q8_0: LlamaFileType.MOSTLY_Q8_0,
    OutputType.Q4_K_M: LlamaFileType.MOSTLY_Q4_K_M,
}


class KernelUnavailable(PipelineError):
    """llama-cpp-python's libggml could not be loaded (the conversion image installs it)."""


def use_more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of the layers that keep more bits in Q4_K_M (first/last eighth, every third)."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def _fallback(kind: GGMLQuantizationType, n_cols: int) -> GGMLQuantizationType:
    """llama.cpp's fallback when a row is not a whole number of the type's blocks."""
    block_size = GGML_QUANT_SIZES[kind][0]
    if n_cols % block_size == 0:
        return kind
    kind = {
        GGMLQuantizationType.Q4_K: GGMLQuantizationType.Q5_0,
        GGMLQuantizationType.Q5_K: GGMLQuantizationType.Q5_1,
        GGMLQuantizationType.Q6_K: GGMLQuantizationType.Q8_0,
    }.get(kind, kind)
    if n_cols % GGML_QUANT_SIZES[kind][0] != 0:
        return GGMLQuantizationType.F16
    return kind


def tensor_type(name: str, shape: tuple[int, ...], output: OutputType, layer: int | None, n_layers: int) -> GGMLQuantizationType:
    """The GGML type of one tensor (GGUF name, numpy shape rows x cols) in a file of ``output`` type."""
    if len(shape) < 2 or output is OutputType.F32:
        return GGMLQuantizationType.F32  # norms stay F32 in every file type, as llama.cpp's converter does
    n_cols = shape[-1]
    if output is OutputType.F16:
        return GGMLQuantizationType.F16
    if output is OutputType.Q8_0:
        return _fallback(GGMLQuantizationType.Q8_0, n_cols)
    # Q4_K_M, following llama.cpp's llama_tensor_get_type for LLAMA_FTYPE_MOSTLY_Q4_K_M.
    if name == "output.weight":
        return GGMLQuantizationType.Q8_0 if n_cols % QK_K else GGMLQuantizationType.Q6_K
    kind = GGMLQuantizationType.Q4_K
    if layer is not None and (name.endswith(".attn_v.weight") or name.endswith(".ffn_down.weight")) and use_more_bits(layer, n_layers):
        kind = GGMLQuantizationType.Q6_K
    return _fallback(kind, n_cols)


def row_bytes(kind: GGMLQuantizationType, n_cols: int) -> int:
    block_size, type_size = GGML_QUANT_SIZES[kind]
    return n_cols // block_size * type_size


def tensor_bytes(kind: GGMLQuantizationType, shape: tuple[int, ...]) -> int:
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    return rows * row_bytes(kind, shape[-1])


@functools.lru_cache(maxsize=1)
def _ggml() -> ctypes.CDLL:
    try:
        import llama_cpp
    except ImportError:
        raise KernelUnavailable("llama-cpp-python is not installed (its libggml quantizes)") from None
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    for name in ("libggml-base.so", "libggml.so", "libggml-base.dylib", "libggml.dylib"):
        if (lib_dir / name).exists():
            lib = ctypes.CDLL(str(lib_dir / name))
            if hasattr(lib, "ggml_quantize_chunk"):
                break
    else:
        raise KernelUnavailable(f"no libggml with ggml_quantize_chunk under {lib_dir}")
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    lib.ggml_quantize_init.restype = None
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    for name in ("ggml_fp32_to_fp16_row", "ggml_fp16_to_fp32_row"):
        getattr(lib, name).restype = None
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return lib


def to_f16(values: np.ndarray) -> np.ndarray:
    """f32 -> f16 with ggml's conversion (round to nearest even, as numpy's, about 2x faster)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    out = np.empty(values.shape, dtype=np.float16)
    _ggml().ggml_fp32_to_fp16_row(values.ctypes.data, out.ctypes.data, values.size)
    return out


# Rows per quantization task: small enough that the threads share even one large tensor evenly.
ROWS_PER_TASK = 256


def encode(values: np.ndarray, kind: GGMLQuantizationType, pool=None, through_f16: bool = False) -> np.ndarray:
    """f32 values (rows x cols) -> the bytes of ``kind``, as a numpy array ready to write.

    With a thread pool, quantization is split into row ranges that run in parallel (ctypes
    releases the GIL); K-quant blocks never cross a row, so the bytes do not depend on the split.
    ``through_f16``: quantize the values an f16 file would hold (what llama.cpp's route quantizes),
    rounding each row range on the way, so no extra full-size copy is made.
    """
    if kind is GGMLQuantizationType.F32:
        return np.ascontiguousarray(values, dtype=np.float32)
    if kind is GGMLQuantizationType.F16:
        return to_f16(values)
    values = np.ascontiguousarray(values, dtype=np.float32)
    n_cols = values.shape[-1]
    n_rows = values.size // n_cols
    size_of_row = row_bytes(kind, n_cols)
    out = np.empty(n_rows * size_of_row, dtype=np.uint8)
    flat = values.reshape(n_rows, n_cols)
    lib = _ggml()
    lib.ggml_quantize_init(int(kind))

    def quantize_rows(first_row: int) -> int:
        rows = min(ROWS_PER_TASK, n_rows - first_row)
        source = flat[first_row : first_row + rows]
        if through_f16:
            half = np.empty(source.shape, dtype=np.float16)
            lib.ggml_fp32_to_fp16_row(source.ctypes.data, half.ctypes.data, source.size)
            source = np.empty(source.shape, dtype=np.float32)
            lib.ggml_fp16_to_fp32_row(half.ctypes.data, source.ctypes.data, source.size)
        # ggml_quantize_chunk offsets dst by start/n_per_row rows; start 0 and an offset pointer
        # lets the source be a row range of its own.
        return lib.ggml_quantize_chunk(int(kind), source.ctypes.data, out.ctypes.data + first_row * size_of_row, 0, rows, n_cols, None)

    starts = range(0, n_rows, ROWS_PER_TASK)
    written = sum(pool.map(quantize_rows, starts) if pool is not None else map(quantize_rows, starts))
    if written != out.size:
        raise KernelUnavailable(f"ggml_quantize_chunk wrote {written} bytes, expected {out.size}")
    return out
