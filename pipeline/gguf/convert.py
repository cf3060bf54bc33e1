"""ConvertToGGUF: base model + LoRA adapter -> one GGUF file, streamed, in one pass over the base.

Per tensor: read it (ranged read), widen to f32, add (alpha/r)·B·A where the adapter targets it,
permute q/k rows for llama.cpp, convert or quantize with ggml's kernels, append to the output.
The header (metadata and every tensor's offset) is computed from the safetensors headers before
any tensor is read, so the file is written front to back. One thread prepares the next tensors
while the others quantize the current one in row ranges, in parallel. Peak memory: about
READ_AHEAD + 1 tensors in f32 plus the quantized one and the adapter, whatever the number of
layers.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import io
import os
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from tqdm import tqdm

from pipeline import model_files, storage
from pipeline.errors import InvalidArgument, PipelineError
from pipeline.gguf import budget, quant, vocab
from pipeline.gguf.safetensors_reader import TensorRef, load_f32, model_tensors, read_header

SUPPORTED_MODEL_TYPES = {"mistral", "llama"}
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<side>[AB])(?:\.default)?\.weight$")
LAYER_OF = re.compile(r"^blk\.(\d+)\.")
DEFAULT_THREADS = max(1, os.cpu_count() or 1)
READ_AHEAD = budget.READ_AHEAD_TENSORS


class UnsupportedModel(PipelineError):
    """The base model is not a Mistral/Llama architecture, or lacks what the export needs."""


class MissingTokenizer(PipelineError):
    """The base model directory has no tokenizer.model (SentencePiece)."""


class AdapterMismatch(PipelineError):
    """The adapter does not fit the base model: another base, unknown target modules, bad shapes."""


@dataclass(frozen=True)
class PlannedTensor:
    gguf_name: str
    source: TensorRef
    shape: tuple[int, ...]
    kind: gguf.GGMLQuantizationType
    nbytes: int
    permute_heads: int | None  # q/k: heads to un-rotate with; None: no permutation
    lora: tuple[np.ndarray, np.ndarray, np.float32] | None  # (A, B, alpha/r), f32


def _order(name: str) -> tuple[int, str]:
    # llama.cpp's own tensor order (weight_name_comparer): non-layer tensors, then by layer, then name.
    match = LAYER_OF.match(name)
    return (int(match.group(1)) if match else -1, name)


def permute_for_llama_cpp(weights: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo Hugging Face's rotate-half layout of q/k rows: per head, (2, rows/2) swapped."""
    return weights.reshape(n_heads, 2, weights.shape[0] // n_heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _load_adapter(adapter_uri: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float, dict[str, Any]]:
    try:
        config = storage.read_json(storage.join(adapter_uri, ADAPTER_CONFIG))
    except storage.StorageError as exc:
        raise AdapterMismatch(f"no readable {ADAPTER_CONFIG} under {adapter_uri}: {exc}") from None
    try:
        rank, alpha = int(config["r"]), float(config["lora_alpha"])
    except (KeyError, TypeError, ValueError):
        raise AdapterMismatch(f"{ADAPTER_CONFIG} lacks r or lora_alpha") from None
    if rank < 1:
        raise AdapterMismatch(f"{ADAPTER_CONFIG} has r={rank}")
    if config.get("use_dora") or config.get("fan_in_fan_out"):
        # DoRA rescales columns and fan_in_fan_out transposes: (alpha/r)·B·A would be wrong.
        raise AdapterMismatch("DoRA and fan_in_fan_out adapters are not exported; train a plain LoRA adapter")
    scaling = alpha / (rank**0.5) if config.get("use_rslora") else alpha / rank
    refs = read_header(storage.join(adapter_uri, ADAPTER_WEIGHTS))
    halves: dict[str, dict[str, np.ndarray]] = collections.defaultdict(dict)
    for key, ref in refs.items():
        match = LORA_KEY.match(key)
        if not match:
            raise AdapterMismatch(f"adapter tensor {key} is not a LoRA A/B weight (only LoRA on Linear layers is exported)")
        halves[f"{match.group('module')}.weight"][match.group("side")] = load_f32(ref)
    pairs = {}
    for base_name, sides in halves.items():
        if set(sides) != {"A", "B"}:
            raise AdapterMismatch(f"adapter has only lora_{''.join(sides)} for {base_name}")
        pairs[base_name] = (sides["A"], sides["B"])
    return pairs, scaling, config


def _copy_tokenizer(base_uri: str, work: Path) -> None:
    # Copied byte for byte: re-saving through transformers 5 would drop tokenizer.model.
    storage.copy_named(base_uri, str(work), model_files.TOKENIZER_FILES)
    missing = [name for name in model_files.REQUIRED_TOKENIZER_FILES if not (work / name).is_file()]
    if missing:
        raise MissingTokenizer(f"{base_uri} has no {', '.join(missing)} (the model the adapter was trained on ships both)")


def rope_theta(config: dict[str, Any]) -> float:
    """RoPE base: top-level ``rope_theta`` (transformers 4, Mistral's own config) or, as transformers
    5 writes it, ``rope_parameters.rope_theta``."""
    parameters = config.get("rope_parameters") or {}
    return float(config.get("rope_theta") or parameters.get("rope_theta") or 10000.0)


def _add_metadata(writer: gguf.GGUFWriter, config: dict[str, Any], output: quant.OutputType, name: str, tokenizer_dir: Path) -> None:
    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    writer.add_name(name)
    writer.add_context_length(config.get("max_position_embeddings", 4096))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_rope_dimension_count(config.get("head_dim") or hidden // heads)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(quant.FILE_TYPES[output])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, scores, types = vocab.sentencepiece_vocab(tokenizer_dir, config["vocab_size"])
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    if not _adds_dummy_prefix(tokenizer_dir / "tokenizer.model"):
        # llama.cpp assumes a dummy prefix for a "llama" vocabulary unless told otherwise; its own
        # converter never says so (Mistral's tokenizer has one, the metadata is then its exactly),
        # a tokenizer without one (the demo's tiny model) needs the key.
        writer.add_add_space_prefix(False)
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    gguf.vocab.SpecialVocab(tokenizer_dir, load_merges=False, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)


def _adds_dummy_prefix(model_file: Path) -> bool:
    """The SentencePiece model's add_dummy_prefix: whether llama.cpp prepends "▁" to text."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    return bool(proto.normalizer_spec.add_dummy_prefix)


class _StreamWriter(gguf.GGUFWriter):
    """gguf-py's writer for the header, metadata and tensor infos, into a stream of ours.

    gguf-py writes tensor data with numpy's tofile, which needs a real file; the export streams
    tensors to an S3 multipart upload, so it writes the (aligned) data itself.
    """

    def __init__(self, stream, arch: str):
        super().__init__(path=None, arch=arch)
        self._stream = stream

    def open_output_file(self, path: Path | None = None) -> None:
        self.fout = [self._stream]
        self.state = gguf.gguf_writer.WriterState.EMPTY


@dataclass(frozen=True)
class ExportResult:
    out_uri: str
    sha256: str
    size: int
    tensor_types: dict[str, int]
    seconds: float

    def describe(self, base_model_uri: str, adapter_uri: str, output: quant.OutputType) -> dict[str, Any]:
        return {
            "out_uri": self.out_uri,
            "sha256": self.sha256,
            "size": self.size,
            "quantization": output.value,
            "tensor_types": self.tensor_types,
            "tensor_count": sum(self.tensor_types.values()),
            "base_model_uri": base_model_uri,
            "adapter_uri": adapter_uri,
            "seconds": round(self.seconds, 1),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }


def plan(base_model_uri: str, adapter_uri: str | None, output: quant.OutputType):
    """Everything known before any tensor data is read: config, adapter, per-tensor plan."""
    try:
        config = storage.read_json(storage.join(base_model_uri, "config.json"))
    except storage.StorageError as exc:
        raise UnsupportedModel(f"no readable config.json under {base_model_uri}: {exc}") from None
    model_type = str(config.get("model_type", "")).lower()
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModel(f"architecture {model_type or config.get('architectures')!r} is not supported (Mistral or Llama)")
    missing = [
        key
        for key in ("num_hidden_layers", "num_attention_heads", "hidden_size", "intermediate_size", "vocab_size")
        if not isinstance(config.get(key), int)
    ]
    if missing:
        raise UnsupportedModel(f"config.json under {base_model_uri} lacks {', '.join(missing)}")
    n_layers, heads = config["num_hidden_layers"], config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    refs = model_tensors(base_model_uri)
    lora, scaling, adapter_config = _load_adapter(adapter_uri) if adapter_uri else ({}, 0.0, {})
    unknown = sorted(set(lora) - set(refs))
    if unknown:
        raise AdapterMismatch(f"the adapter targets modules the base model does not have: {', '.join(unknown[:5])}")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    planned = []
    for hf_name, ref in refs.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed by llama.cpp from rope_theta
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UnsupportedModel(f"tensor {hf_name} has no llama.cpp name (not a plain Mistral/Llama checkpoint)")
        merge: tuple[np.ndarray, np.ndarray, np.float32] | None = None
        pair = lora.get(hf_name)
        if pair is not None:
            a, b = pair
            if a.ndim != 2 or b.ndim != 2 or (b.shape[0], a.shape[1]) != ref.shape or a.shape[0] != b.shape[1]:
                raise AdapterMismatch(
                    f"adapter for {hf_name} has shapes A{a.shape} B{b.shape}, the base tensor is {ref.shape}: "
                    "the adapter was trained on another base model"
                )
            merge = (a, b, np.float32(scaling))
        permute = heads if hf_name.endswith("q_proj.weight") else kv_heads if hf_name.endswith("k_proj.weight") else None
        layer_match = LAYER_OF.match(gguf_name)
        layer = int(layer_match.group(1)) if layer_match else None
        kind = quant.tensor_type(gguf_name, ref.shape, output, layer, n_layers)
        planned.append(PlannedTensor(gguf_name, ref, ref.shape, kind, quant.tensor_bytes(kind, ref.shape), permute, merge))
    planned.sort(key=lambda tensor: _order(tensor.gguf_name))
    return config, planned, adapter_config


def _load_values(tensor: PlannedTensor) -> np.ndarray:
    """The tensor's final f32 values: base, plus the LoRA delta, in llama.cpp's row order."""
    values = load_f32(tensor.source)
    if tensor.lora is not None:
        a, b, scaling = tensor.lora
        values = values + (b @ a) * scaling  # peft's order of operations, so the sums round alike
    if tensor.permute_heads is not None:
        values = np.ascontiguousarray(permute_for_llama_cpp(values, tensor.permute_heads))
    return values


def export_gguf(
    base_model_uri: str,
    adapter_uri: str | None,
    out_uri: str,
    output: quant.OutputType = quant.OutputType.Q4_K_M,
    threads: int = DEFAULT_THREADS,
    progress: bool = True,
    model_name: str = "mistral-researcher",
    limits: tuple[float, int] | None = None,
) -> dict[str, Any]:
    """Write the GGUF to ``out_uri`` and its description to ``<out_uri>.json``; returns the description.

    ``limits`` (seconds, memory MB): refuse up front, with ModelTooLargeForLambda, an export the
    estimate says cannot finish within them.
    """
    if threads < 1:
        raise InvalidArgument(f"--threads must be at least 1, got {threads}")
    started = time.monotonic()
    config, planned, _ = plan(base_model_uri, adapter_uri, output)
    if limits is not None:
        adapter_bytes = sum(a.nbytes + b.nbytes for tensor in planned if tensor.lora for a, b, _ in [tensor.lora])
        budget.check(budget.estimate(planned, threads, adapter_bytes), *limits)
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT

    with tempfile.TemporaryDirectory(prefix="gguf-tokenizer-") as work:
        _copy_tokenizer(base_model_uri, Path(work))
        header = io.BytesIO()
        writer = _StreamWriter(header, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        _add_metadata(writer, config, output, model_name, Path(work))
        for tensor in planned:
            writer.add_tensor_info(tensor.gguf_name, tensor.shape, np.dtype(np.float32), tensor.nbytes, raw_dtype=tensor.kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()

    types = Counter(tensor.kind.name for tensor in planned)
    total = sum(tensor.nbytes for tensor in planned)
    with storage.open_write(out_uri) as raw_out:
        out = storage.HashingWriter(raw_out)
        head = header.getvalue()
        out.write(head)
        out.write(b"\0" * (-len(head) % alignment))
        # One thread reads and merges the next tensors while `threads` threads quantize the current
        # one, row range by row range: at most READ_AHEAD + 1 tensors in f32 are alive at a time.
        with (
            concurrent.futures.ThreadPoolExecutor(max_workers=threads) as quantizers,
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as reader,
            tqdm(total=total, unit="B", unit_scale=True, desc="convert", disable=not progress) as bar,
        ):
            # Two tensors read ahead: a small tensor (a norm) is quantized in no time, and the
            # quantizers should not then wait for the large one behind it to be read.
            upcoming = collections.deque(reader.submit(_load_values, tensor) for tensor in planned[:READ_AHEAD])
            for index, tensor in enumerate(planned):
                values = upcoming.popleft().result()
                if index + READ_AHEAD < len(planned):
                    upcoming.append(reader.submit(_load_values, planned[index + READ_AHEAD]))
                # Quantized from the f16-rounded values: what llama.cpp's route (f16 file ->
                # llama-quantize) quantizes, so the bytes agree with it.
                data = quant.encode(values, tensor.kind, pool=quantizers, through_f16=True)
                del values
                if data.nbytes != tensor.nbytes:
                    raise PipelineError(f"{tensor.gguf_name}: {data.nbytes} bytes produced, {tensor.nbytes} planned")
                out.write(memoryview(data).cast("B"))  # type: ignore[arg-type]  # ndarrays are buffers
                out.write(b"\0" * (-tensor.nbytes % alignment))
                bar.update(tensor.nbytes)
    result = ExportResult(out_uri, out.sha256, out.bytes_written, dict(sorted(types.items())), time.monotonic() - started)
    description = result.describe(base_model_uri, adapter_uri or "", output)
    storage.write_json(f"{out_uri}.json", description)
    return description
