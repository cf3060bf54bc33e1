"""Will an export finish inside a Lambda? Estimated from the safetensors headers before any work.

Kernel rates are llama.cpp's quantization throughput per core measured on this project's machines
(docs/benchmarks.md); S3 read throughput is a conservative figure for one Lambda. The estimate errs
on the slow side: a refused export costs nothing, a timed-out one costs 15 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGMLQuantizationType

from pipeline.errors import PipelineError

# Parameters per second per core, below what was measured here (Q4_K 9.6 M/s, Q6_K 23.1 M/s on
# one core: docs/benchmarks.md), so that a refusal errs on the safe side.
KERNEL_RATE = {
    GGMLQuantizationType.Q4_K: 8e6,
    GGMLQuantizationType.Q5_0: 20e6,
    GGMLQuantizationType.Q6_K: 20e6,
    GGMLQuantizationType.Q8_0: 200e6,
    GGMLQuantizationType.F16: 300e6,
    GGMLQuantizationType.F32: 600e6,
}
S3_READ_BYTES_PER_SECOND = 60e6
SAFETY_FACTOR = 1.5
FIXED_OVERHEAD_BYTES = 600 * 1024 * 1024  # Python, numpy, libggml, gguf-py
READ_AHEAD_TENSORS = 2  # tensors the export reads and merges ahead of the one being quantized


class ModelTooLargeForLambda(PipelineError):
    """The export would not finish within the Lambda's time or memory; run it on a larger host."""


@dataclass(frozen=True)
class Estimate:
    seconds: float
    peak_bytes: int


def estimate(tensors, threads: int, adapter_bytes: int) -> Estimate:
    """``tensors``: the export plan (each with .source and .kind)."""
    quantize = (
        sum(tensor.source.n_elements / KERNEL_RATE.get(tensor.kind, KERNEL_RATE[GGMLQuantizationType.Q4_K]) for tensor in tensors) / threads
    )
    read = sum(tensor.source.end - tensor.source.start for tensor in tensors) / S3_READ_BYTES_PER_SECOND
    largest_f32 = max(tensor.source.n_elements for tensor in tensors) * 4
    # The tensor being quantized, those read ahead, and the merge's temporary: in f32.
    in_flight = (READ_AHEAD_TENSORS + 2) * largest_f32
    return Estimate(seconds=SAFETY_FACTOR * (quantize + read), peak_bytes=in_flight + adapter_bytes + FIXED_OVERHEAD_BYTES)


def check(estimate_: Estimate, seconds_available: float, memory_mb: int) -> None:
    if estimate_.seconds > seconds_available:
        raise ModelTooLargeForLambda(f"estimated {estimate_.seconds:.0f} s, only {seconds_available:.0f} s available")
    if estimate_.peak_bytes > memory_mb * 1024 * 1024:
        raise ModelTooLargeForLambda(f"estimated peak memory {estimate_.peak_bytes / 2**30:.1f} GiB exceeds {memory_mb} MB")
